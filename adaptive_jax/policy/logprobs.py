"""The policy's log-probability of each token of its own rows, teacher-forced.

What GRPO's ratio, the label-free loop's likelihood reward and IAS's likelihood score all
read: one full forward over right-padded rows, the distribution at each position taken at the
sampling temperature.
"""

import jax.numpy as jnp

from adaptive_jax.models.text_eval import token_logprobs as logprobs_of_targets
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer


def token_logprobs(cfg: ModelConfig, params, tokens_NxT, temperature: float = 1.0):
  """logp_NxT[t] = log p(token t + 1 | tokens <= t) under softmax(logits / temperature); the
  last column is 0."""
  logits_NxTxV = Transformer(cfg).apply({"params": params}, tokens_NxT).astype(jnp.float32)
  logp_NxT = logprobs_of_targets(logits_NxTxV[:, :-1] / temperature, tokens_NxT[:, 1:])
  return jnp.pad(logp_NxT, ((0, 0), (0, 1)))
