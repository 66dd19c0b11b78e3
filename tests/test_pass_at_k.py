"""pass@k against subset enumeration; random-order curves against pass@k and a hand vote."""

import itertools

import numpy as np
import pytest

from adaptive_jax.scaling import pass_at_k


def _perfect_selector(correct_QxN, gold_Q):
  """The gold answer when any of the chosen samples is correct, else a wrong one (-1)."""
  def answer_fn(slots_QxK):
    return np.where(np.take_along_axis(correct_QxN, slots_QxK, 1).any(1), gold_Q, -1)
  return answer_fn


def _majority(answers_QxN):
  """The most frequent answer among the chosen samples; ties to the smallest answer."""
  def answer_fn(slots_QxK):
    picked_QxK = np.take_along_axis(answers_QxN, slots_QxK, 1)
    out = []
    for row in picked_QxK:
      values, counts = np.unique(row, return_counts=True)
      out.append(values[np.argmax(counts)])
    return np.array(out)
  return answer_fn


def test_pass_at_k_matches_subset_enumeration():
  rng = np.random.default_rng(0)
  for n in range(1, 8):
    correct_QxN = rng.random((6, n)) < rng.random((6, 1))
    correct_QxN[0] = False
    correct_QxN[-1] = True
    for k in range(1, n + 1):
      expected = [np.mean([row[list(s)].any() for s in itertools.combinations(range(n), k)])
                  for row in correct_QxN]
      got = pass_at_k.unbiased_pass_at_k(correct_QxN, k)
      assert got.dtype == np.float64
      np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_pass_at_k_hand_values():
  # c = 2 of n = 4: pass@1 = 1/2, pass@2 = 1 - C(2,2)/C(4,2) = 5/6, pass@3 = 1.
  correct = [[1, 0, 1, 0]]
  assert pass_at_k.unbiased_pass_at_k(correct, 1)[0] == pytest.approx(0.5)
  assert pass_at_k.unbiased_pass_at_k(correct, 2)[0] == pytest.approx(5 / 6)
  assert pass_at_k.unbiased_pass_at_k(correct, 3)[0] == 1.0


def test_perfect_selector_curve_converges_to_pass_at_k():
  rng = np.random.default_rng(1)
  q, n, orders = 16, 8, 2000
  correct_QxN = rng.random((q, n)) < rng.random((q, 1))
  correct_QxN[0], correct_QxN[1] = False, True
  gold_Q = np.arange(q)
  ks = [1, 2, 3, 5, 8]
  curve_KxQ = pass_at_k.random_order_curve(_perfect_selector(correct_QxN, gold_Q), gold_Q, n, ks,
                                           orders=orders, seed=3)
  expected_KxQ = np.stack([pass_at_k.unbiased_pass_at_k(correct_QxN, k) for k in ks])
  # k = n: every order holds the whole pool.
  np.testing.assert_array_equal(curve_KxQ[-1], expected_KxQ[-1])
  # Otherwise within Monte-Carlo error (4.5 standard errors per cell, on average tighter).
  stderr_KxQ = np.sqrt(expected_KxQ * (1 - expected_KxQ) / orders)
  assert (np.abs(curve_KxQ - expected_KxQ) <= 4.5 * stderr_KxQ + 1e-12).all()
  mean_stderr_K = np.sqrt((stderr_KxQ ** 2).sum(1)) / q
  assert (np.abs(curve_KxQ.mean(1) - expected_KxQ.mean(1)) <= 4 * mean_stderr_K + 1e-12).all()
  # The same orders serve every k, so a perfect selector's curve never drops with k.
  assert (np.diff(curve_KxQ, axis=0) >= 0).all()


def test_orders_are_nested_prefixes_and_seeded():
  q, n = 3, 5
  seen = []
  def record(slots_QxK):
    seen.append(slots_QxK.copy())
    return np.zeros(q)
  pass_at_k.random_order_curve(record, np.zeros(q), n, [2, 5], orders=4, seed=7)
  for short, full in zip(seen[0::2], seen[1::2]):
    np.testing.assert_array_equal(np.sort(full, 1), np.tile(np.arange(n), (q, 1)))
    np.testing.assert_array_equal(short, full[:, :2])
  # Same seed, same orders; another seed, others.
  again = []
  pass_at_k.random_order_curve(lambda s: (again.append(s.copy()), np.zeros(q))[1], np.zeros(q),
                               n, [2, 5], orders=4, seed=7)
  assert all(np.array_equal(a, b) for a, b in zip(seen, again, strict=True))
  other = []
  pass_at_k.random_order_curve(lambda s: (other.append(s.copy()), np.zeros(q))[1], np.zeros(q),
                               n, [2, 5], orders=4, seed=8)
  assert not all(np.array_equal(a, b) for a, b in zip(seen, other, strict=True))


def test_majority_vote_at_full_pool():
  # Question 0: 7 x3, 5 x2 -> 7 (gold 7, correct). Question 1: 4 x2, 9 x2, 1 -> tie, smallest
  # -> 4 (gold 9, wrong). Question 2: 3 x1, 8 x4 -> 8 (gold 3, wrong despite a correct sample).
  answers_QxN = np.array([[7, 5, 7, 5, 7], [4, 9, 1, 9, 4], [3, 8, 8, 8, 8]])
  gold_Q = np.array([7, 9, 3])
  curve_KxQ = pass_at_k.random_order_curve(_majority(answers_QxN), gold_Q, 5, [5, 1],
                                           orders=50, seed=0)
  np.testing.assert_array_equal(curve_KxQ[0], [1.0, 0.0, 0.0])
  # k = 1: majority of one sample is that sample, so the accuracy estimates its share.
  np.testing.assert_allclose(curve_KxQ[1], [0.6, 0.4, 0.2], atol=0.25)


@pytest.mark.parametrize("call, match", [
    (lambda: pass_at_k.unbiased_pass_at_k([[1, 0]], 3), "k"),
    (lambda: pass_at_k.unbiased_pass_at_k([[1, 0]], 0), "k"),
    (lambda: pass_at_k.unbiased_pass_at_k([1, 0], 1), "correct_QxN"),
    (lambda: pass_at_k.unbiased_pass_at_k([[0.5, 1]], 1), "correct_QxN"),
    (lambda: pass_at_k.random_order_curve(np.zeros_like, [0], 3, [4], orders=1, seed=0), "ks"),
    (lambda: pass_at_k.random_order_curve(np.zeros_like, [0], 3, [], orders=1, seed=0), "ks"),
    (lambda: pass_at_k.random_order_curve(np.zeros_like, [0], 3, [1], orders=0, seed=0),
     "orders"),
    (lambda: pass_at_k.random_order_curve(np.zeros_like, [0], 3, [1], orders=1, seed=-1), "seed"),
    (lambda: pass_at_k.random_order_curve(np.zeros_like, [], 3, [1], orders=1, seed=0), "gold_Q"),
    (lambda: pass_at_k.random_order_curve(np.zeros_like, [0], 3, [2], orders=1, seed=0),
     "answer_fn"),
])
def test_errors_name_their_argument(call, match):
  with pytest.raises(ValueError, match=match):
    call()
