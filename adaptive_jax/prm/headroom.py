"""Reference predictors of the MC target: what a PRM that knew less, or more, would score.

A PRM's Brier against Monte-Carlo targets has two floors and one ceiling to read it against:

- `mc_noise_floor`: even the true success rate p of every prefix scores p(1 - p) / R against a
  target that is the success fraction of R rollouts; no predictor gets below it on average.
- `group_mean_predictions` with keys the PRM can read from the text (difficulty, step): the
  score of knowing only how hard a question looks and how far its solution has got.
- the same with keys it cannot read, such as whether the prefix follows the gold solution
  (`tasks.problem.follows_gold_steps`): how much an exact step verifier would add.

Fit on the calibration records, scored on the test records, as the calibrated PRM is.
"""

from collections.abc import Hashable, Sequence

import numpy as np

from adaptive_jax.prm import metrics


def group_mean_predictions(fit_keys: Sequence[Hashable], fit_y, eval_keys: Sequence[Hashable]
                           ) -> np.ndarray:
  """Each eval record's prediction: the mean fit target of the fit records with its key.

  A key no fit record has gets the mean of all fit targets.
  """
  fit_y = metrics.check_probs(fit_y, "fit_y")
  if fit_y.ndim != 1 or len(fit_keys) != len(fit_y):
    raise ValueError(f"fit_keys and fit_y must be 1-D of one length, got {len(fit_keys)} keys "
                     f"and fit_y of shape {fit_y.shape}")
  sums, counts = {}, {}
  for key, y in zip(fit_keys, fit_y):
    sums[key] = sums.get(key, 0.0) + y
    counts[key] = counts.get(key, 0) + 1
  overall = float(np.mean(fit_y))
  return np.array([sums[k] / counts[k] if k in counts else overall for k in eval_keys])


def mc_noise_floor(y, num_rollouts) -> float:
  """Unbiased estimate of the mean Brier that the true success rates score against `y`.

  y = k / R with k ~ Binomial(R, p): E[(y - p)^2] = p(1 - p) / R and
  E[y(1 - y)] = p(1 - p)(1 - 1 / R), so p(1 - p) / R = E[y(1 - y)] / (R - 1).
  `num_rollouts`: R, one int for all records or one per record; every R must be >= 2.
  """
  y = metrics.check_probs(y, "y")
  r = np.broadcast_to(np.asarray(num_rollouts), y.shape)
  if not np.issubdtype(r.dtype, np.integer) or np.any(r < 2):
    raise ValueError(f"num_rollouts must be integers >= 2 (one rollout says nothing of the "
                     f"noise), got {np.unique(r)[:5]}")
  return float(np.mean(y * (1 - y) / (r - 1)))
