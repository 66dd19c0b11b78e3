"""Rotary position embeddings (rotate-half convention, as in Llama / GPT-NeoX)."""

import math

import jax.numpy as jnp


def inverse_frequencies(head_dim: int, theta: float, scaling=None):
  """theta^(-2i/H) for i < H/2, float32; with `scaling` Llama 3.1's rule.

  `scaling` = (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings),
  the rule of transformers' `_compute_llama3_parameters`: a frequency whose wavelength 2 pi / f
  is shorter than original / high_freq_factor is kept, one longer than original /
  low_freq_factor is divided by factor, and one between is interpolated,
  (1 - s) f / factor + s f with s = (original / wavelength - low) / (high - low).
  """
  inv_freq_H2 = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  if scaling is None:
    return inv_freq_H2
  factor, low_freq_factor, high_freq_factor, original = scaling
  low_freq_wavelen, high_freq_wavelen = original / low_freq_factor, original / high_freq_factor
  wavelen_H2 = 2 * math.pi / inv_freq_H2
  scaled_H2 = jnp.where(wavelen_H2 > low_freq_wavelen, inv_freq_H2 / factor, inv_freq_H2)
  smooth_H2 = (original / wavelen_H2 - low_freq_factor) / (high_freq_factor - low_freq_factor)
  smoothed_H2 = (1 - smooth_H2) * scaled_H2 / factor + smooth_H2 * scaled_H2
  is_medium_H2 = (wavelen_H2 >= high_freq_wavelen) & (wavelen_H2 <= low_freq_wavelen)
  return jnp.where(is_medium_H2, smoothed_H2, scaled_H2)


def apply_rope(x_BxTxNxH, positions_BxT, *, theta: float, scaling=None):
  """Rotates feature pairs (i, i + H/2) of each head by angle position * inv_freq[i]
  (`inverse_frequencies`: theta^(-2i/H), or Llama 3.1's scaled frequencies)."""
  inv_freq_H2 = inverse_frequencies(x_BxTxNxH.shape[-1], theta, scaling)
  angle_BxTxH2 = positions_BxT[..., None].astype(jnp.float32) * inv_freq_H2
  sin = jnp.sin(angle_BxTxH2)[:, :, None, :]
  cos = jnp.cos(angle_BxTxH2)[:, :, None, :]
  x1, x2 = jnp.split(x_BxTxNxH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxH.dtype)
