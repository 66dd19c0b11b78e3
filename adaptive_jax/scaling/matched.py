"""A method's FLOPs over a fixed-N method's FLOPs at the same accuracy, with a paired bootstrap.

The fixed method is a curve of K points (one per N), each with per-question FLOPs and
correctness (fractional when averaged over random pool orders). Its FLOPs at an accuracy are
read on the running-max envelope of its points sorted by FLOPs, linear between the cheapest
points of successive envelope levels (a dominated point is never an end).
Worked example: points (FLOPs, accuracy) (1, .2), (2, .5), (4, .4), (8, .8) have the envelope
.2, .5, .5, .8: accuracy .35 -> 1.5, .5 -> 2, .6 -> 2 + 6 * (.1 / .3) = 4, .9 -> 8 (above).
Letters: K curve points, Q questions, R bootstrap resamples.
"""

import numpy as np

from adaptive_jax import bootstrap
from adaptive_jax.typed_config import check_number


def _match(flops_RxK, accuracy_RxK, target_R):
  """(matched FLOPs_R, above_R, sorted flops_RxK, envelope_RxK) for R curves at once."""
  order_RxK = np.argsort(flops_RxK, axis=1, kind="stable")
  flops_RxK = np.take_along_axis(flops_RxK, order_RxK, 1)
  envelope_RxK = np.maximum.accumulate(np.take_along_axis(accuracy_RxK, order_RxK, 1), axis=1)
  rows = np.arange(len(flops_RxK))
  # k: the first point whose envelope reaches the target (K when none does).
  k_R = (envelope_RxK < target_R[:, None]).sum(1)
  above_R = k_R == flops_RxK.shape[1]
  best_R = (envelope_RxK < envelope_RxK[:, -1:]).sum(1)  # the first point at the best accuracy
  hi_R = np.where(above_R, best_R, k_R)
  # lo: the cheapest point at the envelope level just below hi's (never a dominated point,
  # which would make the fixed method look costlier than it is).
  below_R = envelope_RxK[rows, np.maximum(hi_R - 1, 0)]
  lo_R = np.where(hi_R > 0, (envelope_RxK < below_R[:, None]).sum(1), 0)
  gap_R = envelope_RxK[rows, hi_R] - envelope_RxK[rows, lo_R]
  between_R = (k_R > 0) & ~above_R
  # (1 - w) a + w b, not a + w (b - a): exactly b when the target is a point's accuracy.
  w_R = np.where(between_R, (target_R - envelope_RxK[rows, lo_R]) / np.where(between_R, gap_R, 1),
                 1.0)
  matched_R = (1 - w_R) * flops_RxK[rows, lo_R] + w_R * flops_RxK[rows, hi_R]
  return matched_R, above_R, flops_RxK, envelope_RxK


def _envelope_at(flops_RxK, envelope_RxK, at_R):
  """The envelope at at_R, clipped to each curve's FLOP range, linear between its corners (the
  cheapest point of each level), flat after the last corner."""
  rows = np.arange(len(flops_RxK))
  k = flops_RxK.shape[1]
  at_R = np.clip(at_R, flops_RxK[:, 0], flops_RxK[:, -1])
  corner_RxK = np.concatenate([np.ones((len(flops_RxK), 1), bool),
                               envelope_RxK[:, 1:] > envelope_RxK[:, :-1]], 1)
  k_K = np.arange(k)
  # i: the last corner at or below at_R; j: the first corner beyond it (none: flat).
  i_R = np.where(corner_RxK & (flops_RxK <= at_R[:, None]), k_K, -1).max(1)
  j_R = np.where(corner_RxK & (flops_RxK > at_R[:, None]), k_K, k).min(1)
  flat_R = j_R == k
  j_R = np.minimum(j_R, k - 1)
  gap_R = flops_RxK[rows, j_R] - flops_RxK[rows, i_R]
  w_R = np.where(flat_R, 0.0, (at_R - flops_RxK[rows, i_R]) / np.where(flat_R, 1, gap_R))
  return (1 - w_R) * envelope_RxK[rows, i_R] + w_R * envelope_RxK[rows, j_R]


def matched_flops(curve_flops_K, curve_accuracy_K, accuracy: float) -> tuple[float, bool]:
  """(FLOPs, above): the fixed curve's FLOPs at `accuracy` on its envelope.

  At or below the first point's accuracy: the first point's FLOPs. Above the envelope's
  best: the FLOPs of the cheapest point at the best accuracy, and above = True.
  """
  flops_K = _check_array("curve_flops_K", curve_flops_K, 1, positive=True)
  accuracy_K = _check_array("curve_accuracy_K", curve_accuracy_K, 1, probability=True)
  if accuracy_K.shape != flops_K.shape:
    raise ValueError(f"curve_accuracy_K must have the shape of curve_flops_K {flops_K.shape}, "
                     f"got {accuracy_K.shape}")
  check_number("accuracy", accuracy, -np.inf, np.inf)
  matched_R, above_R, _, _ = _match(flops_K[None], accuracy_K[None], np.array([accuracy], float))
  return float(matched_R[0]), bool(above_R[0])


def _check_array(name, values, ndim, *, positive=False, probability=False) -> np.ndarray:
  values = np.asarray(values, np.float64)
  if values.ndim != ndim or 0 in values.shape:
    raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {values.shape}")
  if positive and not (np.isfinite(values) & (values > 0)).all():
    raise ValueError(f"{name} must be positive and finite")
  if probability and not ((values >= 0) & (values <= 1)).all():
    raise ValueError(f"{name} must be in [0, 1] (no NaN)")
  return values


def _check_inputs(fixed_flops_KxQ, fixed_correct_KxQ, method_flops_Q, method_correct_Q):
  """The four inputs stacked as values_VxQ: K fixed FLOPs, K fixed correct, method FLOPs, correct."""
  fixed_flops_KxQ = _check_array("fixed_flops_KxQ", fixed_flops_KxQ, 2, positive=True)
  k, q = fixed_flops_KxQ.shape
  arrays = [fixed_flops_KxQ]
  for name, values, ndim, positive in (
      ("fixed_correct_KxQ", fixed_correct_KxQ, 2, False),
      ("method_flops_Q", method_flops_Q, 1, True),
      ("method_correct_Q", method_correct_Q, 1, False)):
    values = _check_array(name, values, ndim, positive=positive, probability=not positive)
    shape = (k, q) if ndim == 2 else (q,)
    if values.shape != shape:
      raise ValueError(f"{name} must have shape {shape}, got {values.shape}")
    arrays.append(values.reshape(-1, q))
  return np.concatenate(arrays), k


def _ratios(means_RxV, k: int) -> dict:
  """matched_ratio's fields as arrays over R question samples, from the inputs' means."""
  flops_RxK, accuracy_RxK = means_RxV[:, :k], means_RxV[:, k:2 * k]
  method_flops_R, method_accuracy_R = means_RxV[:, 2 * k], means_RxV[:, 2 * k + 1]
  matched_R, above_R, sorted_RxK, envelope_RxK = _match(flops_RxK, accuracy_RxK, method_accuracy_R)
  return {
      "ratio": method_flops_R / matched_R,
      "above_curve": above_R,
      "accuracy_gain_at_equal_flops":
          method_accuracy_R - _envelope_at(sorted_RxK, envelope_RxK, method_flops_R),
      "method_accuracy": method_accuracy_R,
      "method_flops": method_flops_R,
  }


def matched_ratio(fixed_flops_KxQ, fixed_correct_KxQ, method_flops_Q, method_correct_Q) -> dict:
  """The method's mean FLOPs over the fixed curve's FLOPs at the method's accuracy.

  Returns `ratio`, `above_curve` (the method's accuracy is above the whole curve: the ratio
  is then taken at the curve's best accuracy, an upper bound on the true ratio),
  `accuracy_gain_at_equal_flops` (method accuracy minus the envelope's at the method's FLOPs,
  clipped to the curve's FLOP range), `method_accuracy` and `method_flops`. Inputs are per
  question; the correct arrays may be fractional.
  """
  values_VxQ, k = _check_inputs(fixed_flops_KxQ, fixed_correct_KxQ, method_flops_Q,
                                method_correct_Q)
  fields = _ratios(values_VxQ.mean(1)[None], k)
  return {"ratio": float(fields["ratio"][0]), "above_curve": bool(fields["above_curve"][0]),
          **{name: float(fields[name][0]) for name in
             ("accuracy_gain_at_equal_flops", "method_accuracy", "method_flops")}}


def paired_bootstrap(fixed_flops_KxQ, fixed_correct_KxQ, method_flops_Q, method_correct_Q, *,
                     resamples: int, seed: int, level: float = 0.9) -> dict:
  """`matched_ratio` plus a percentile interval of the ratio over question resamples.

  The resamples are `bootstrap.resample_counts(Q, resamples, seed)`, the same questions for
  the fixed curve and the method (paired). Adds `interval` [lo, hi] (the ratio's
  (1 -+ level) / 2 quantiles, taken on the log ratio), `log_ratio_halfwidth`
  ((log hi - log lo) / 2), `above_curve_fraction` (the share of resamples above the curve) and
  `accuracy_gain_interval` (the same quantiles of the accuracy gain at equal FLOPs: where the
  fixed curve is flat the ratio at matched accuracy swings widely, this difference does not).
  """
  point = matched_ratio(fixed_flops_KxQ, fixed_correct_KxQ, method_flops_Q, method_correct_Q)
  values_VxQ, k = _check_inputs(fixed_flops_KxQ, fixed_correct_KxQ, method_flops_Q,
                                method_correct_Q)
  q = values_VxQ.shape[1]
  # Integer counts keep the means of 0/1 correctness exact, as in matched_ratio, so ties with
  # the curve break the same way.
  counts_RxQ = bootstrap.resample_counts(q, resamples=resamples, seed=seed)
  fields = _ratios(counts_RxQ @ values_VxQ.T / q, k)
  log_lo, log_hi = bootstrap.percentile_interval(np.log(fields["ratio"]), level)
  gain_lo, gain_hi = bootstrap.percentile_interval(fields["accuracy_gain_at_equal_flops"], level)
  return {**point, "interval": [float(np.exp(log_lo)), float(np.exp(log_hi))],
          "log_ratio_halfwidth": float((log_hi - log_lo) / 2),
          "above_curve_fraction": float(fields["above_curve"].mean()),
          "accuracy_gain_interval": [float(gain_lo), float(gain_hi)]}


def ratio_line(name: str, result: dict) -> str:
  """"{name} = ratio [lo, hi]", 3 decimals, noting a method above the fixed curve."""
  if "interval" not in result:
    raise ValueError("result must be a paired_bootstrap result (with an `interval`), got keys "
                     f"{sorted(result)}")
  lo, hi = result["interval"]
  note = " (above the fixed curve)" if result["above_curve"] else ""
  return f"{name} = {result['ratio']:.3f} [{lo:.3f}, {hi:.3f}]{note}"


def gain_line(name: str, result: dict) -> str:
  """"{name} = +gain [lo, hi]": accuracy minus the fixed curve's at equal FLOPs, 3 decimals."""
  if "accuracy_gain_interval" not in result:
    raise ValueError("result must be a paired_bootstrap result (with an "
                     f"`accuracy_gain_interval`), got keys {sorted(result)}")
  lo, hi = result["accuracy_gain_interval"]
  return f"{name} = {result['accuracy_gain_at_equal_flops']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
