"""Greedy budget allocation against exhaustive enumeration, a heap greedy and a hand example."""

import heapq
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.allocation import budget as budget_lib


def _brute_force_best(p_Q, total, n_max, n_min):
  """The best sum of coverage over every allocation in [n_min, n_max]^Q with sum <= total."""
  n_AxQ = np.array(list(itertools.product(range(n_min, n_max + 1), repeat=len(p_Q))))
  n_AxQ = n_AxQ[n_AxQ.sum(1) <= total]
  return (1 - (1 - p_Q[None, :]) ** n_AxQ).sum(1).max()


def _heap_greedy(p_Q, total, n_max, n_min):
  """One sample at a time to the largest next gain; ties to the lower question index."""
  n_Q = [n_min] * len(p_Q)
  heap = [(-p * (1 - p) ** n_min, i) for i, p in enumerate(p_Q) if n_min < n_max]
  heapq.heapify(heap)
  for _ in range(total - n_min * len(p_Q)):
    if not heap or heap[0][0] == 0:
      break
    _, i = heapq.heappop(heap)
    n_Q[i] += 1
    if n_Q[i] < n_max:
      heapq.heappush(heap, (-p_Q[i] * (1 - p_Q[i]) ** n_Q[i], i))
  return n_Q


def _random_p(rng, q):
  # Continuous p, plus the edges 0 and 1 and dyadic values whose gains tie exactly.
  pool = np.concatenate([rng.random(q), [0.0, 1.0, 0.25, 0.5, 0.75]])
  return rng.choice(pool, q)


def test_hand_example():
  # After one sample each, 3 left for the gains .25, .125, .0625 (q0), .09, .009 (q2), 0 (q1):
  # the top three are .25, .125, .09.
  n_Q = budget_lib.greedy_allocation([0.5, 0.0, 0.9], 6, n_max=4, n_min=1)
  assert n_Q.dtype == np.int32
  np.testing.assert_array_equal(n_Q, [3, 1, 2])
  assert budget_lib.expected_coverage([0.5, 0.0, 0.9], n_Q) == pytest.approx((0.875 + 0.99) / 3)


def _random_case(rng, *, max_q: int, max_n: int):
  """(q, n_min, n_max, p_Q): q in [1, max_q], n_min in [0, 2], n_max in [max(n_min, 1), max_n]."""
  q = int(rng.integers(1, max_q + 1))
  n_min = int(rng.integers(0, 3))
  n_max = int(rng.integers(max(n_min, 1), max_n + 1))
  return q, n_min, n_max, _random_p(rng, q)


def test_matches_brute_force_optimum():
  rng = np.random.default_rng(0)
  for _ in range(300):
    q, n_min, n_max, p_Q = _random_case(rng, max_q=4, max_n=5)
    # Budgets at the edges: the minimum, just above it, the maximum, beyond it.
    for total in {n_min * q, n_min * q + 1, int(rng.integers(n_min * q, n_max * q + 1)),
                  n_max * q, n_max * q + 3}:
      n_Q = budget_lib.greedy_allocation(p_Q, total, n_max=n_max, n_min=n_min)
      assert ((n_Q >= n_min) & (n_Q <= n_max)).all() and n_Q.sum() <= total
      got = budget_lib.expected_coverage(p_Q, n_Q) * q
      assert got == pytest.approx(_brute_force_best(p_Q, total, n_max, n_min), abs=1e-12)


def test_matches_heap_greedy():
  rng = np.random.default_rng(1)
  for _ in range(100):
    q, n_min, n_max, p_Q = _random_case(rng, max_q=39, max_n=19)
    total = int(rng.integers(n_min * q, n_max * q + 5))
    np.testing.assert_array_equal(
        budget_lib.greedy_allocation(p_Q, total, n_max=n_max, n_min=n_min),
        _heap_greedy(list(p_Q), total, n_max, n_min))


def test_zero_gain_samples_are_never_bought():
  # p = 0 never gains; p = 1 gains only its first sample. The budget is left unspent.
  np.testing.assert_array_equal(
      budget_lib.greedy_allocation([0.0, 1.0, 0.0], 30, n_max=10, n_min=2), [2, 2, 2])
  np.testing.assert_array_equal(
      budget_lib.greedy_allocation([0.0, 1.0, 0.5], 30, n_max=10, n_min=0), [0, 1, 10])
  # n_max = n_min: nothing to allocate.
  np.testing.assert_array_equal(
      budget_lib.greedy_allocation([0.3, 0.6], 10, n_max=2, n_min=2), [2, 2])


def test_marginal_gain_numpy_and_jax():
  p = np.array([0.0, 0.5, 0.9, 1.0])
  expected = np.array([0.0, 0.125, 0.009, 0.0])  # n = 2
  np.testing.assert_allclose(budget_lib.marginal_gain(p, 2), expected, atol=1e-15)
  np.testing.assert_allclose(np.asarray(budget_lib.marginal_gain(jnp.asarray(p), 2)), expected,
                             atol=1e-7)
  # The gain is what one more sample adds to the coverage.
  n = np.arange(6)
  np.testing.assert_allclose(budget_lib.marginal_gain(0.3, n),
                             (1 - 0.7 ** (n + 1)) - (1 - 0.7 ** n), atol=1e-15)


@pytest.mark.parametrize("kwargs, match", [
    (dict(p_Q=[0.5, 1.5], budget=4, n_max=3), "p_Q"),
    (dict(p_Q=[0.5, np.nan], budget=4, n_max=3), "p_Q"),
    (dict(p_Q=[], budget=4, n_max=3), "p_Q"),
    (dict(p_Q=[[0.5]], budget=4, n_max=3), "p_Q"),
    (dict(p_Q=[0.5, 0.5], budget=4, n_max=3, n_min=-1), "n_min"),
    (dict(p_Q=[0.5, 0.5], budget=8, n_max=3, n_min=4), "n_max"),
    (dict(p_Q=[0.5, 0.5], budget=4, n_max=0, n_min=0), "n_max"),
    (dict(p_Q=[0.5, 0.5], budget=3, n_max=3, n_min=2), r"budget .*>= n_min \* Q = 4"),
    (dict(p_Q=[0.5, 0.5], budget=4.0, n_max=3), "budget"),
])
def test_errors_name_their_argument(kwargs, match):
  p_Q = kwargs.pop("p_Q")
  total = kwargs.pop("budget")
  with pytest.raises(ValueError, match=match):
    budget_lib.greedy_allocation(p_Q, total, **kwargs)


def test_expected_coverage_errors():
  with pytest.raises(ValueError, match="n_Q"):
    budget_lib.expected_coverage([0.5, 0.5], [1])
  with pytest.raises(ValueError, match="n_Q"):
    budget_lib.expected_coverage([0.5, 0.5], [1.5, 2])
