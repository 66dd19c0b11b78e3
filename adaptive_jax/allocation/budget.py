"""Samples per question under a total budget: maximize the expected number of covered questions.

Question i, answered correctly by each independent sample with probability p_i, is covered
(some sample correct) by n_i samples with probability 1 - (1 - p_i)^n_i. Its (n+1)-th sample
adds g_i(n) = p_i (1 - p_i)^n, nonincreasing in n, so the objective is separable and concave
and the greedy (always buy the largest remaining gain) is exact: it takes the largest
(budget - n_min * Q) gains among all (i, n) with n_min <= n < n_max.
Worked example, p = (0.5, 0.0, 0.9), n_min = 1, n_max = 4, budget 6: after one sample each,
3 to spend on the gains 0.25, 0.125, 0.0625 (i = 0), 0.09, 0.009, 0.0009 (i = 2), 0 (i = 1):
the top three are 0.25, 0.125, 0.09 -> n = (3, 1, 2).
"""

import numpy as np

from adaptive_jax.typed_config import check_integer, is_integer


def marginal_gain(p, n):
  """g(p, n) = p (1 - p)^n: the coverage the (n+1)-th sample adds; NumPy or jax.numpy."""
  return p * (1 - p) ** n


def _check_p(p_Q) -> np.ndarray:
  p_Q = np.asarray(p_Q, np.float64)
  if p_Q.ndim != 1 or p_Q.size == 0:
    raise ValueError(f"p_Q must be a non-empty 1-D array of probabilities, got shape {p_Q.shape}")
  if np.isnan(p_Q).any() or (p_Q < 0).any() or (p_Q > 1).any():
    raise ValueError(f"p_Q must be probabilities in [0, 1] (no NaN), got {p_Q}")
  return p_Q


def greedy_allocation(p_Q, budget, *, n_max: int, n_min: int = 1) -> np.ndarray:
  """n_Q (int32) in [n_min, n_max] maximizing sum_i 1 - (1 - p_i)^n_i with sum n_i <= budget.

  Ties between equal gains go to the lower question index, then the lower n. A sample whose
  gain is 0 (every sample of p = 0; those after the first of p = 1) is never bought, so
  sum(n_Q) may be below `budget`.
  """
  p_Q = _check_p(p_Q)
  n_min = check_integer("n_min", n_min, minimum=0)
  n_max = check_integer("n_max", n_max, minimum=max(n_min, 1))
  q = len(p_Q)
  if not is_integer(budget) or budget < n_min * q:
    raise ValueError(f"budget must be an integer >= n_min * Q = {n_min * q}, got {budget!r}")
  # gain_QxM[i, m]: the gain of question i's (n_min + m + 1)-th sample. A stable sort of the
  # row-major flattening breaks ties by question index, then by n.
  gain_QxM = marginal_gain(p_Q[:, None], np.arange(n_min, n_max)[None, :])
  gain = gain_QxM.ravel()
  chosen = np.argsort(-gain, kind="stable")[:budget - n_min * q]
  chosen = chosen[gain[chosen] > 0]
  return (n_min + np.bincount(chosen // max(n_max - n_min, 1), minlength=q)).astype(np.int32)


def expected_coverage(p_Q, n_Q) -> float:
  """Mean over questions of 1 - (1 - p_i)^n_i: the expected share with a correct sample."""
  p_Q = _check_p(p_Q)
  n_Q = np.asarray(n_Q)
  if n_Q.shape != p_Q.shape or not np.issubdtype(n_Q.dtype, np.integer) or (n_Q < 0).any():
    raise ValueError(f"n_Q must be nonnegative integers of shape {p_Q.shape}, got {n_Q!r}")
  return float(np.mean(1 - (1 - p_Q) ** n_Q))
