"""Post-hoc calibration baselines, fitted on a calibration split and applied to new predictions.

Each is a frozen dataclass: `Method.fit(p_N, y_N, ...)` returns the fitted calibrator and
`calibrator(p) -> p` maps new probabilities (numpy in, numpy out). Targets y may be
fractions (Monte-Carlo success rates). `ConformalLowerBound` corrects a lower quantile instead,
with a guarantee per question.
"""

import dataclasses
import math

import numpy as np
import scipy.optimize
import sklearn.isotonic

from adaptive_jax.prm.metrics import bin_index, check_pair, check_probs
from adaptive_jax.typed_config import check_integer

_LOGIT_EPS = 1e-6  # p is clipped to [eps, 1 - eps] before the logit: saturated PRMs stay finite


def _logit(p: np.ndarray) -> np.ndarray:
  p = np.clip(p, _LOGIT_EPS, 1 - _LOGIT_EPS)
  return np.log(p) - np.log1p(-p)


@dataclasses.dataclass(frozen=True)
class TemperatureScaling:
  """p -> sigmoid(logit(p) / temperature); T > 1 softens an overconfident PRM."""
  temperature: float

  @classmethod
  def fit(cls, p, y, *, bounds=(1e-2, 1e2)) -> "TemperatureScaling":
    """Minimizes the mean binary cross-entropy against fractional targets over T in `bounds`.

    The loss is convex in 1/T (a one-feature logistic regression without bias), so a bounded
    scalar search over log T (scipy's Brent) finds the global minimum on the interval.
    """
    p, y = check_pair(p, y)
    z = _logit(p).ravel()
    y = y.ravel()

    def bce(log_t):
      s = z / math.exp(log_t)
      return float(np.mean(np.logaddexp(0.0, s) - y * s))  # -y log sig(s) - (1-y) log sig(-s)

    result = scipy.optimize.minimize_scalar(
        bce, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
        options={"xatol": 1e-8})
    return cls(temperature=math.exp(result.x))

  def __call__(self, p) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-_logit(check_probs(p, "p")) / self.temperature))


@dataclasses.dataclass(frozen=True, eq=False)
class IsotonicCalibration:
  """Non-decreasing piecewise-linear map through scikit-learn's isotonic fit, clipped outside."""
  x_K: np.ndarray  # the fit's thresholds (sklearn's X_thresholds_, y_thresholds_)
  y_K: np.ndarray

  @classmethod
  def fit(cls, p, y) -> "IsotonicCalibration":
    p, y = check_pair(p, y)
    iso = sklearn.isotonic.IsotonicRegression(
        y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(p.ravel(), y.ravel())
    return cls(x_K=iso.X_thresholds_, y_K=iso.y_thresholds_)

  def __call__(self, p) -> np.ndarray:
    # Same as sklearn's predict: clip to the fitted range, interpolate linearly between thresholds.
    return np.interp(check_probs(p, "p"), self.x_K, self.y_K)


@dataclasses.dataclass(frozen=True, eq=False)
class HistogramBinning:
  """Piecewise constant: p in bin b (edges[b] <= p < edges[b+1], last closed) -> values[b].

  values[b] is the mean target of the calibration points in bin b; an empty bin keeps the
  identity at its centre. Equal-width edges are k/B; equal-mass edges are the quantiles of the
  calibration p with the ends set to 0 and 1, duplicates merged (so there may be fewer bins).
  """
  edges_B1: np.ndarray
  values_B: np.ndarray

  @classmethod
  def fit(cls, p, y, *, num_bins: int = 10, equal_mass: bool = False) -> "HistogramBinning":
    p, y = check_pair(p, y)
    num_bins = check_integer("num_bins", num_bins)
    if equal_mass:
      edges = np.quantile(p, np.linspace(0, 1, num_bins + 1))
      edges[0], edges[-1] = 0.0, 1.0
      edges = np.unique(edges)
    else:
      edges = np.arange(num_bins + 1) / num_bins
    nb = len(edges) - 1
    bin_N = bin_index(p.ravel(), edges)
    counts = np.bincount(bin_N, minlength=nb)
    sums = np.bincount(bin_N, weights=y.ravel(), minlength=nb)
    centres = (edges[:-1] + edges[1:]) / 2
    values = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
    return cls(edges_B1=edges, values_B=values)

  def __call__(self, p) -> np.ndarray:
    return self.values_B[bin_index(check_probs(p, "p"), self.edges_B1)]


@dataclasses.dataclass(frozen=True)
class ConformalLowerBound:
  """Split-conformal correction of a lower quantile, at question level: q -> clip(q - shift, 0, 1).

  A question's records (prefixes of its responses) are correlated, so they are not exchangeable
  with each other; the questions are. So each of the m calibration questions gives one score,
  the largest q_i - y_i over its records, and shift is the k-th smallest of the m scores,
  k = ceil((m + 1)(1 - alpha)) (+inf when k > m, giving q = 0). The guarantee, for a new
  question exchangeable with the calibration questions: P(every one of its records has
  y >= corrected q) >= 1 - alpha; so each record is covered with probability >= 1 - alpha too.
  Worked example: questions a: (q - y) = (.1, .4), b: (.2,), c: (.3, .0) -> scores .4 .2 .3;
  alpha = .5, k = ceil(4 * .5) = 2 -> shift .3. The shift is negative (q moves up) when the
  input bound is more conservative than needed. Clipping to [0, 1] keeps the guarantee.
  """
  shift: float
  alpha: float

  @classmethod
  def fit(cls, q_lo, y, *, question, alpha: float = 0.1) -> "ConformalLowerBound":
    """`question`: each record's question id (records with one id share a question)."""
    q_lo, y = check_pair(q_lo, y, "q_lo", "y")
    question_N = np.asarray(question).ravel()
    if question_N.shape != q_lo.ravel().shape:
      raise ValueError(f"question must give one id per record: got {question_N.shape[0]} ids "
                       f"for {q_lo.size} records")
    if not 0 < alpha < 1:
      raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    _, group_N = np.unique(question_N, return_inverse=True)
    question_scores = np.full(group_N.max() + 1, -np.inf)
    np.maximum.at(question_scores, group_N, (q_lo - y).ravel())
    question_scores = np.sort(question_scores)
    k = math.ceil((question_scores.size + 1) * (1 - alpha))
    return cls(shift=float(question_scores[k - 1]) if k <= question_scores.size else math.inf, alpha=alpha)

  def __call__(self, q_lo) -> np.ndarray:
    return np.clip(check_probs(q_lo, "q_lo") - self.shift, 0.0, 1.0)


def question_coverage(covered_N, question_N) -> float:
  """The fraction of questions all of whose records are covered (what the conformal bound
  guarantees to be >= 1 - alpha)."""
  covered_N, question_N = np.asarray(covered_N, bool).ravel(), np.asarray(question_N).ravel()
  if covered_N.shape != question_N.shape or not covered_N.size:
    raise ValueError(f"covered and question must be non-empty with one entry per record, got "
                     f"{covered_N.shape} and {question_N.shape}")
  _, group_N = np.unique(question_N, return_inverse=True)
  all_covered = np.ones(group_N.max() + 1, bool)
  np.logical_and.at(all_covered, group_N, covered_N)
  return float(np.mean(all_covered))
