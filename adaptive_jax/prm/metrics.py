"""Calibration metrics for a PRM's success probabilities against Monte-Carlo targets.

`p_N` are predicted success probabilities, `y_N` targets in [0, 1]: binary outcomes or
fractions of successful rollouts. Everything is numpy except `pinball_loss`, which is jax so
that the quantile head can be trained with it. Bins are equal-width on [0, 1]: bin b holds
b/B <= p < (b+1)/B, and the last bin also holds p = 1.
"""

from typing import Callable, Hashable

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax import bootstrap
from adaptive_jax.typed_config import check_integer


def check_probs(x, name: str) -> np.ndarray:
  """Returns `x` as a float64 array; ValueError naming `name` if empty, NaN or outside [0, 1]."""
  x = np.asarray(x, dtype=np.float64)
  if x.size == 0:
    raise ValueError(f"{name} must be non-empty, got shape {x.shape}")
  bad = np.isnan(x) | (x < 0) | (x > 1)
  if bad.any():
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(f"{name} must be probabilities in [0, 1] (no NaN), got {x[first]} at {first}")
  return x


def check_pair(p, y, p_name: str = "p", y_name: str = "y") -> tuple[np.ndarray, np.ndarray]:
  """Checks both arrays with `check_probs` and that their shapes match."""
  p, y = check_probs(p, p_name), check_probs(y, y_name)
  if p.shape != y.shape:
    raise ValueError(f"{p_name} and {y_name} must have the same shape, got {p.shape} and {y.shape}")
  return p, y


def bin_index(p: np.ndarray, edges_B1: np.ndarray) -> np.ndarray:
  """Bin b of each p with edges[b] <= p < edges[b + 1]; the last bin is closed on the right."""
  return np.searchsorted(edges_B1[1:-1], p, side="right")


def brier(p, y) -> float:
  """Mean squared error (p - y)^2; with fractional y it is the Brier score against MC rates."""
  p, y = check_pair(p, y)
  return float(np.mean((p - y) ** 2))


def reliability_curve(p, y, num_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per equal-width bin: (mean predicted, mean observed, count); empty bins give NaN, NaN, 0."""
  p, y = check_pair(p, y)
  num_bins = check_integer("num_bins", num_bins)
  bin_N = bin_index(p, np.arange(num_bins + 1) / num_bins)  # k / B: exact for 0.3, 0.7, ...
  counts_B = np.bincount(bin_N.ravel(), minlength=num_bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_p_B = np.bincount(bin_N.ravel(), weights=p.ravel(), minlength=num_bins) / counts_B
    mean_y_B = np.bincount(bin_N.ravel(), weights=y.ravel(), minlength=num_bins) / counts_B
  return mean_p_B, mean_y_B, counts_B


def ece(p, y, num_bins: int = 10) -> float:
  """Expected calibration error: sum_b (n_b / n) |mean p in b - mean y in b| over equal-width bins."""
  mean_p_B, mean_y_B, counts_B = reliability_curve(p, y, num_bins)
  full_B = counts_B > 0
  weights_B = counts_B[full_B] / counts_B.sum()
  return float(np.sum(weights_B * np.abs(mean_p_B[full_B] - mean_y_B[full_B])))


def quantile_coverage(q_pred, y):
  """One-sided coverage: the fraction of examples with y <= q_pred (about tau for a tau-quantile).

  `q_pred` is [N] (returns a float) or [N, Q] with `y` [N] (returns [Q], one per level).
  With tied targets (MC fractions) P(y >= q) can exceed 1 - coverage; count that directly.
  """
  q_pred, y = check_probs(q_pred, "q_pred"), check_probs(y, "y")
  if q_pred.shape[:1] != y.shape or q_pred.ndim not in (1, 2) or y.ndim != 1:
    raise ValueError(
        f"q_pred must have shape [N] or [N, Q] with y of shape [N], got {q_pred.shape} and {y.shape}")
  covered = y.reshape((-1,) + (1,) * (q_pred.ndim - 1)) <= q_pred
  return float(covered.mean()) if q_pred.ndim == 1 else covered.mean(axis=0)


def pinball_loss(q_pred_NxQ: jax.Array, y_N: jax.Array, levels_Q) -> jax.Array:
  """Mean over examples and levels of the pinball loss max(tau u, (tau - 1) u), u = y - q.

  Differentiable in `q_pred_NxQ`. Shapes are always checked; values of `y_N` and `levels_Q`
  only when they are concrete (not traced).
  """
  q_pred_NxQ, y_N = jnp.asarray(q_pred_NxQ), jnp.asarray(y_N)
  levels_Q = jnp.asarray(levels_Q, dtype=q_pred_NxQ.dtype)
  if (q_pred_NxQ.ndim != 2 or y_N.shape != q_pred_NxQ.shape[:1]
      or levels_Q.shape != q_pred_NxQ.shape[1:] or q_pred_NxQ.size == 0):
    raise ValueError(
        "q_pred_NxQ, y_N, levels_Q must have shapes [N, Q], [N], [Q] with N, Q >= 1, got "
        f"{q_pred_NxQ.shape}, {y_N.shape}, {levels_Q.shape}")
  if not isinstance(levels_Q, jax.core.Tracer):
    lv = np.asarray(levels_Q)
    if not np.all((lv > 0) & (lv < 1)):
      raise ValueError(f"levels_Q must be quantile levels in (0, 1), got {lv}")
  if not isinstance(y_N, jax.core.Tracer):
    check_probs(y_N, "y_N")
  u_NxQ = y_N[:, None] - q_pred_NxQ
  return jnp.mean(jnp.maximum(levels_Q * u_NxQ, (levels_Q - 1) * u_NxQ))


def per_bucket(metric_fn: Callable, p, y, buckets) -> dict[Hashable, float]:
  """{bucket: metric_fn(p[in bucket], y[in bucket])} for each distinct value of `buckets`, sorted."""
  p, y = check_pair(p, y)
  buckets = np.asarray(buckets)
  if buckets.shape != p.shape[:1]:
    raise ValueError(f"buckets must have shape {p.shape[:1]} (one per example), got {buckets.shape}")
  return {b.item(): metric_fn(p[buckets == b], y[buckets == b]) for b in np.unique(buckets)}


def brier_ratio(p_a, p_b, y, groups, *, confidence: float = 0.9, num_resamples: int = 2000,
                seed: int = 0) -> dict[str, float]:
  """brier(p_a, y) / brier(p_b, y), with a percentile bootstrap interval over `groups`.

  Records of one group (question) are correlated, so the bootstrap draws whole groups with
  replacement (`bootstrap.resample_counts`, paired, on the groups' summed squared errors):
  with 64 test questions the 90% interval of a ratio near 0.33 spans about 0.23-0.42.
  Returns {"ratio", "low", "high"}; low and high are None for a single group.
  """
  p_a, y = check_pair(p_a, y, "p_a", "y")
  p_b, _ = check_pair(p_b, y, "p_b", "y")
  groups = np.asarray(groups)
  if groups.shape != y.shape[:1] or y.ndim != 1:
    raise ValueError(f"groups must have shape {y.shape[:1]} (one per record), got {groups.shape}")
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  check_integer("num_resamples", num_resamples)
  _, group_N = np.unique(groups, return_inverse=True)
  sum_a_G = np.bincount(group_N, weights=(p_a - y) ** 2)
  sum_b_G = np.bincount(group_N, weights=(p_b - y) ** 2)
  if sum_b_G.sum() == 0:
    raise ValueError("brier(p_b, y) is 0: the ratio is undefined")

  point = float(sum_a_G.sum() / sum_b_G.sum())
  if len(sum_a_G) < 2:  # one group: nothing to resample
    return {"ratio": point, "low": None, "high": None}
  counts_RxG = bootstrap.resample_counts(len(sum_a_G), resamples=num_resamples, seed=seed)
  with np.errstate(divide="ignore", invalid="ignore"):  # a resample with b's errors all 0: inf
    ratio_R = (counts_RxG @ sum_a_G) / (counts_RxG @ sum_b_G)
  low, high = bootstrap.percentile_interval(ratio_R, confidence)
  return {"ratio": point, "low": low, "high": high}
