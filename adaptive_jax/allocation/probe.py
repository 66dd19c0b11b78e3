"""Probe IAS: a question's sample count from its first sample, not from the empty prefix.

IAS as published reads the PRM once, at the empty prefix, before any sample. Here each
question first draws one sample; its lowest group confidence (DeepConf's self-confidence of
the policy), optionally with the calibrated PRM's score of that sample and the question-level
combined estimate, gives p, and N(p) decides how many samples the question draws in all.
The map is a logistic regression (`combined.CombinedEstimate`) fit on a validation pool:
every drawn sample is one example whose target is the success rate of the question's *other*
samples (leave one out, so a sample's own correctness does not leak into its target).

`target_fn` turns a fitted estimate into an `adaptive.Probe` target function that runs inside
the adaptive loop (float32, traced): the loop decides on device, after the first round.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.allocation import combined, ias

# The columns of `features`, and the feature sets: which columns a probe reads.
FEATURES = ("confidence", "sample_score", "prior")
KINDS = {"confidence": (0,), "combined": (0, 1, 2)}


def features(confidence_N, score_N, prior_N) -> np.ndarray:
  """features_Nx3: lowest group confidence (non-finite -> NaN), logit of the sample's PRM
  score, logit of the question-level prior estimate. NumPy (float64) or JAX (float32) arrays."""
  xp = jnp if any(isinstance(x, jax.Array) for x in (confidence_N, score_N, prior_N)) else np
  logit = lambda p: xp.log(xp.clip(p, 1e-4, 1 - 1e-4)) - xp.log1p(-xp.clip(p, 1e-4, 1 - 1e-4))
  dtype = jnp.float32 if xp is jnp else np.float64
  conf_N = xp.asarray(confidence_N, dtype)
  conf_N = xp.where(xp.isfinite(conf_N), conf_N, xp.nan)
  return xp.stack([conf_N, logit(xp.asarray(score_N, dtype)),
                   logit(xp.asarray(prior_N, dtype))], axis=-1)


def leave_one_out_rate(correct_QxN) -> np.ndarray:
  """rate_QxN: for sample n of question q, the success rate of q's other samples."""
  correct_QxN = np.asarray(correct_QxN, np.float64)
  n = correct_QxN.shape[1]
  if n < 2:
    raise ValueError(f"need at least 2 samples per question, got {n}")
  return (correct_QxN.sum(1, keepdims=True) - correct_QxN) / (n - 1)


@dataclasses.dataclass(frozen=True)
class ProbeEstimate:
  kind: str
  estimate: combined.CombinedEstimate

  def weights(self) -> dict:
    """The fitted logistic weight of each feature this probe reads (standardized inputs)."""
    return {FEATURES[c]: float(w) for c, w in zip(KINDS[self.kind], self.estimate.weights_F)}

  @classmethod
  def fit(cls, kind: str, features_NxF, targets_N) -> "ProbeEstimate":
    if kind not in KINDS:
      raise ValueError(f"probe kind must be one of {tuple(KINDS)}, got {kind!r}")
    x = np.asarray(features_NxF, np.float64)[:, KINDS[kind]]
    keep = np.isfinite(x).all(1)
    return cls(kind, combined.CombinedEstimate.fit(x[keep], np.asarray(targets_N)[keep]))

  def __call__(self, features_NxF):
    """p_N; NumPy in, NumPy out; JAX in (traced), float32 JAX out. A NaN feature (an empty
    sample) sits at the fit's mean."""
    est = self.estimate
    xp = np if isinstance(features_NxF, np.ndarray) else jnp
    x = features_NxF[..., list(KINDS[self.kind])]
    z = xp.nan_to_num((x - xp.asarray(est.mean_F, x.dtype)) / xp.asarray(est.scale_F, x.dtype))
    return 1.0 / (1.0 + xp.exp(-(z @ xp.asarray(est.weights_F, x.dtype) + est.bias)))


def target_fn(estimate: ProbeEstimate, *, channel: int, n_max: int, q: float):
  """An `adaptive.Probe` target function for one probe sample: N(p) of its estimate.

  data must hold "prior_Q", the question-level estimate; `channel` picks the score channel.
  """
  def fn(data, question_Q, answers_QxK, scores_QxKxC, confidence_QxK):
    del answers_QxK
    x_QxF = features(confidence_QxK[:, 0], scores_QxKxC[:, 0, channel],
                     data["prior_Q"][question_Q])
    return ias.num_samples(estimate(x_QxF), n_max=n_max, q=q)
  return fn
