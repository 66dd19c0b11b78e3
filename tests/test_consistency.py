"""Adaptive-Consistency's Beta stop against hand-computed stopping points and scipy."""

import math

import jax
import numpy as np
import pytest
from scipy import integrate, stats

from adaptive_jax.sampler import consistency
from adaptive_jax.sampler.selection import NO_ANSWER

A, B, C, X = 1, 2, 3, NO_ANSWER


def _exact(a, b):
  """P(p > 1/2), p ~ Beta(a + 1, b + 1), integer a, b: P(Binomial(a + b + 1, 1/2) <= a)."""
  n = a + b + 1
  return sum(math.comb(n, j) for j in range(a + 1)) / 2**n


def _first_stop(sequence, threshold=0.95):
  """Feeds the prefixes of one answer sequence as the valid slots; the first n that stops."""
  n = len(sequence)
  answers = np.tile(np.array(sequence, np.int32), (n, 1))
  valid = np.arange(n)[None, :] < np.arange(1, n + 1)[:, None]  # row r: first r + 1 slots
  stop = jax.jit(lambda a, v: consistency.beta_stop(a, v, threshold=threshold))(answers, valid)
  stops = np.flatnonzero(np.asarray(stop))
  return int(stops[0]) + 1 if len(stops) else None


def test_exact_formula_is_their_integral():
  # stopping_criterias.py: quad(x^a (1-x)^b, .5, 1) / quad(x^a (1-x)^b, 0, 1).
  for a, b in [(1, 0), (4, 0), (5, 1), (6, 1), (9, 4)]:
    f = lambda x: x**a * (1 - x)**b
    assert math.isclose(integrate.quad(f, 0.5, 1)[0] / integrate.quad(f, 0, 1)[0], _exact(a, b),
                        rel_tol=1e-9)


def test_stopping_points_by_hand():
  # Unanimous: P = 1 - 0.5^(n+1): n = 3 -> 15/16 = 0.9375, n = 4 -> 31/32 = 0.96875: stop at 4.
  assert _first_stop([A] * 8) == 4
  # One dissent: (a, b) = (5, 1) -> 1 - 8/128 = 0.9375, (6, 1) -> 1 - 9/256 = 0.965: stop at 7.
  assert _first_stop([A, B, A, A, A, A, A, A]) == 7
  # Third answers do not count against the leader: a C changes nothing but the sample count.
  assert _first_stop([A, B, C, A, A, A, A, A, A]) == 8
  # NO_ANSWER samples are skipped: four answered A's among them stop at slot 6.
  assert _first_stop([X, A, A, X, A, A, A]) == 6
  # Two dissents: (7, 2) -> 1 - 56/1024 = 0.945, (8, 2) -> 1 - 67/2048 = 0.967: stop at 10.
  assert _exact(7, 2) == 1 - 56 / 1024 and _exact(8, 2) == 1 - 67 / 2048
  assert _first_stop([A, B, A, B, A, A, A, A, A, A]) == 10
  # A 50/50 split never settles; a looser threshold stops unanimous answers sooner (n = 2: 7/8).
  assert _first_stop([A, B] * 6) is None
  assert _first_stop([A] * 8, threshold=0.8) == 2


def test_matches_scipy_beta_on_random_counts():
  rng = np.random.default_rng(0)
  q, n = 300, 40
  answers = rng.integers(0, 4, size=(q, n)).astype(np.int32)
  # Skew half the questions towards answer 0 so probabilities span (0, 1).
  answers[: q // 2] = np.where(rng.random((q // 2, n)) < 0.7, 0, answers[: q // 2])
  answers[rng.random((q, n)) < 0.1] = NO_ANSWER
  valid = np.arange(n)[None, :] < rng.integers(0, n + 1, size=q)[:, None]
  got = np.asarray(jax.jit(consistency.settled_probability)(answers, valid))
  want = []
  for answers_N, valid_N in zip(answers, valid):
    counts = sorted(np.unique(answers_N[valid_N & (answers_N != NO_ANSWER)], return_counts=True)[1],
                    reverse=True) + [0, 0]
    want.append(stats.beta.sf(0.5, counts[0] + 1, counts[1] + 1))
  np.testing.assert_allclose(got, want, atol=4e-5)  # float32 betainc, worst near 1/2
  assert np.asarray(want).min() < 0.6 and np.asarray(want).max() > 0.999  # a >= b: P >= 1/2
  stop = np.asarray(consistency.beta_stop(answers, valid))
  clear = np.abs(np.asarray(want) - 0.95) > 1e-5
  np.testing.assert_array_equal(stop[clear], (np.asarray(want) >= 0.95)[clear])


def test_default_threshold_exact_for_all_counts_up_to_64():
  # Every (a, b), b <= a, a + b <= 64: the exact P stays > 8e-5 from 0.95 and float32 betainc
  # errs < 1.1e-5 above P = 0.8, so the stop decisions are the exact ones.
  pairs = [(a, b) for a in range(65) for b in range(a + 1) if a + b <= 64]
  answers = np.full((len(pairs), 64), NO_ANSWER, np.int32)
  for row, (a, b) in enumerate(pairs):
    answers[row, :a + b] = [B] * b + [A] * a  # the majority need not come first
  valid = answers != NO_ANSWER
  exact = np.array([_exact(a, b) for a, b in pairs])
  got = np.asarray(jax.jit(consistency.settled_probability)(answers, valid))
  high = exact > 0.8
  np.testing.assert_allclose(got[high], exact[high], atol=1.1e-5)
  np.testing.assert_array_equal(consistency.beta_stop(answers, valid), exact >= 0.95)


def test_no_answer_rows_and_single_slot():
  answers = np.array([[X, X, X], [A, X, X]], np.int32)
  valid = np.ones((2, 3), bool)
  # No counted answer: a = b = 0, the uniform prior: 1/2. One answer: 1 - 1/4.
  np.testing.assert_allclose(consistency.settled_probability(answers, valid), [0.5, 0.75],
                             atol=1e-6)
  np.testing.assert_array_equal(consistency.beta_stop(answers, valid), [False, False])
  np.testing.assert_allclose(consistency.settled_probability(answers[:, :1], valid[:, :1]),
                             [0.5, 0.75], atol=1e-6)


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5, -0.1, True, "0.9"])
def test_bad_threshold_raises(threshold):
  with pytest.raises(ValueError, match="threshold"):
    consistency.beta_stop(np.zeros((1, 2), np.int32), np.ones((1, 2), bool), threshold=threshold)
