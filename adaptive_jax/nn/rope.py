"""Rotary position embeddings (rotate-half convention, as in Llama / GPT-NeoX)."""

import jax.numpy as jnp


def apply_rope(x_BxTxNxH, positions_BxT, *, theta: float):
  """Rotates feature pairs (i, i + H/2) of each head by angle position * theta^(-2i/H)."""
  head_dim = x_BxTxNxH.shape[-1]
  inv_freq_H2 = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  angle_BxTxH2 = positions_BxT[..., None].astype(jnp.float32) * inv_freq_H2
  sin = jnp.sin(angle_BxTxH2)[:, :, None, :]
  cos = jnp.cos(angle_BxTxH2)[:, :, None, :]
  x1, x2 = jnp.split(x_BxTxNxH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxH.dtype)
