"""One success estimate from both signals: the calibrated PRM and the policy's own confidence.

A question's features before any sample is drawn: the logits of the calibrated PRM's
quantiles and mean and of the base PRM's probability at the empty prefix, and the policy's
log-probability statistics of the question text (mean and minimum per token: how familiar the
question looks to the policy). A logistic regression maps them to the success probability,
fit on the calibration split's step-0 Monte-Carlo targets only (fractional targets enter as a
positive and a negative example weighted t and 1 - t).
"""

import dataclasses

import numpy as np
from sklearn.linear_model import LogisticRegression

_EPS = 1e-4


def _logit(p):
  p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
  return np.log(p / (1 - p))


def features(prm_probs_NxK, prompt_logprob_mean_N, prompt_logprob_min_N) -> np.ndarray:
  """features_NxF: logits of the PRM outputs, then the two log-probability statistics."""
  return np.concatenate([_logit(prm_probs_NxK), np.asarray(prompt_logprob_mean_N)[:, None],
                         np.asarray(prompt_logprob_min_N)[:, None]], axis=1)


@dataclasses.dataclass(frozen=True)
class CombinedEstimate:
  mean_F: np.ndarray
  scale_F: np.ndarray
  weights_F: np.ndarray
  bias: float

  @classmethod
  def fit(cls, features_NxF, targets_N, *, l2: float = 1.0) -> "CombinedEstimate":
    x = np.asarray(features_NxF, np.float64)
    y = np.asarray(targets_N, np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(y) < 2:
      raise ValueError(f"need features_NxF and targets_N of one length N >= 2, got {x.shape}, "
                       f"{y.shape}")
    if np.isnan(x).any() or ((y < 0) | (y > 1) | np.isnan(y)).any():
      raise ValueError("features must be finite and targets in [0, 1]")
    mean, scale = x.mean(0), x.std(0) + 1e-8
    z = (x - mean) / scale
    model = LogisticRegression(C=1.0 / l2, max_iter=1000)
    model.fit(np.concatenate([z, z]), np.r_[np.ones(len(y)), np.zeros(len(y))],
              sample_weight=np.r_[y, 1 - y] + 1e-9)
    return cls(mean, scale, model.coef_[0], float(model.intercept_[0]))

  def __call__(self, features_NxF) -> np.ndarray:
    z = (np.asarray(features_NxF, np.float64) - self.mean_F) / self.scale_F
    return 1.0 / (1.0 + np.exp(-(z @ self.weights_F + self.bias)))
