"""PRM scores at every position of a sequence in one forward pass: a whole sample's step scores.

The PRM reads h = [h_last; h_mean] at the end of a prefix (model.py). At position t of a
right-padded sequence, h_last is the final-normed state at t and h_mean the mean of states
0..t; the attention is causal, so these are exactly what the PRM computes on the sequence cut
after t. One pass over a sampled solution therefore scores all of its step boundaries.
"""

import functools

import jax
import jax.numpy as jnp

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.prm.model import PRM, probabilities

# Channels of `step_scores`, per position: the calibrated PRM's Q quantiles and mean (columns
# of `probabilities`), then the base PRM's probability, which the calibrated PRM's own head
# still computes (calibration adds `delta` beside it).
BASE = "base"


def channels(module: PRM, h_NxF):
  """probs_NxK of the PRM's output layers on features h_NxF (`readout`'s): for a calibrated
  PRM the Q quantiles, the mean, then the base probability; for a base PRM K = 1."""
  probs_NxK = probabilities(module.outputs(h_NxF))
  if module.num_quantiles:
    base_N = jax.nn.sigmoid(module.head(h_NxF)[:, 0])
    probs_NxK = jnp.concatenate([probs_NxK, base_N[:, None]], -1)
  return probs_NxK


def position_probabilities(params, tokens_BxT, *, model_cfg: ModelConfig, num_quantiles: int):
  """probs_BxTxK at every position of right-padded tokens_BxT: for a calibrated PRM the Q
  quantiles, the mean, then the base probability (K = Q + 2); for a base PRM K = 1."""
  if tokens_BxT.ndim != 2 or tokens_BxT.shape[1] > model_cfg.max_len:
    raise ValueError(f"tokens_BxT must have shape [batch, T] with T <= the PRM's "
                     f"model.max_len={model_cfg.max_len}, got shape {tokens_BxT.shape}")
  return _position_probabilities(params, tokens_BxT, model_cfg=model_cfg,
                                 num_quantiles=num_quantiles)


@functools.partial(jax.jit, static_argnames=("model_cfg", "num_quantiles"))
def _position_probabilities(params, tokens_BxT, *, model_cfg: ModelConfig, num_quantiles: int):
  batch, length = tokens_BxT.shape
  module = PRM(model_cfg, num_quantiles)
  h_BxTxF = module.apply({"params": params}, tokens_BxT, method=PRM.position_readout)
  probs_NxK = module.apply({"params": params}, h_BxTxF.reshape(batch * length, -1),
                           method=channels)
  return probs_NxK.reshape(batch, length, -1)


def columns(levels) -> dict:
  """Column index of each output of `position_probabilities` for a calibrated PRM."""
  names = {f"q{level:g}": i for i, level in enumerate(levels)}
  return {**names, "mean": len(levels), BASE: len(levels) + 1}
