"""Percentile bootstrap over questions: the one resampling behind every interval we report.

Records of one question are correlated (a question's prefixes, its samples), so a resample
draws whole questions with replacement, and two methods compared on the same questions see
the same draws (paired). A resample is held as counts, how often it drew each question: a
statistic that sums over questions is then one matrix product, `counts_RxQ @ values_Q`.

  draws of resample r   [2, 0, 2]  (Q = 3)   ->   counts_RxQ[r] = [1, 0, 2]

Letters: R resamples, Q questions.
"""

import numpy as np

from adaptive_jax.typed_config import check_integer, check_number


def resample_counts(num_questions: int, *, resamples: int, seed: int) -> np.ndarray:
  """counts_RxQ (float): how often resample r drew question q; Q draws per resample.

  The draws are np.random.default_rng(seed).integers(0, Q, (R, Q)), as scipy.stats.bootstrap
  draws them for one (or paired) sample of Q observations.
  """
  q = check_integer("num_questions", num_questions)
  r = check_integer("resamples", resamples)
  seed = check_integer("seed", seed, minimum=0)
  index_RxQ = np.random.default_rng(seed).integers(0, q, (r, q))
  flat = (np.arange(r)[:, None] * q + index_RxQ).ravel()
  return np.bincount(flat, minlength=r * q).reshape(r, q).astype(np.float64)


def percentile_interval(statistic_R, level: float) -> list[float]:
  """[lo, hi]: the (1 - level) / 2 and (1 + level) / 2 quantiles (linear) of the resamples."""
  level = check_number("level", level, 0, 1)
  lo, hi = np.quantile(np.asarray(statistic_R, np.float64), [(1 - level) / 2, (1 + level) / 2])
  return [float(lo), float(hi)]
