"""Instance-adaptive scaling (IAS): how many samples a prefix needs, from its success probability.

N(p) = ceil(log(1 - q) / log(1 - p)) is the fewest independent samples that contain at least
one success with probability >= q, when each succeeds with probability p (paper, q = 0.99:
p = 0.9 -> 2, 0.5 -> 7, 0.1 -> 44). jax.numpy throughout, so it runs inside `jit`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.typed_config import check_integer, is_number

P_CLIP = 1e-4  # p is clipped to [P_CLIP, 1 - P_CLIP], as in the paper
# The log ratio is shrunk by a relative amount before the ceil, so that rounding error just
# above an integer does not add a sample: in float32 log(0.01) / log(0.1) comes out 2.0000007,
# which must give 2, not 3. Concrete inputs are computed in float64 (exact up to ratios within
# 1e-12 of an integer); traced ones (inside `jit`) in float32, where 5e-7 covers the ratio's
# rounding: off by one for about 0.04% of p, all with N > 100.
_CEIL_RTOL_64 = 1e-12
_CEIL_RTOL = 5e-7


def _check_q(q) -> None:
  if not is_number(q) or not 0 < q < 1:
    raise ValueError(f"q must be a confidence level in (0, 1), got {q!r}")


def _check_p(p, name: str):
  """p as a float64 NumPy array when concrete (exact counts), else the traced array."""
  if isinstance(p, jax.core.Tracer):
    return p
  values = np.asarray(p, np.float64)
  if np.isnan(values).any() or (values < 0).any() or (values > 1).any():
    raise ValueError(f"{name} must be probabilities in [0, 1] (no NaN), got {values}")
  return values


def _uncapped(p, q: float) -> jax.Array:
  if not isinstance(p, jax.core.Tracer):
    p = np.clip(np.asarray(p, np.float64), P_CLIP, 1 - P_CLIP)
    ratio = np.log1p(-np.float64(q)) / np.log1p(-p)
    return jnp.asarray(np.ceil(ratio * (1 - _CEIL_RTOL_64)).astype(np.int32))
  p = jnp.clip(p, P_CLIP, 1 - P_CLIP)
  return jnp.ceil(jnp.log1p(-q) / jnp.log1p(-p) * (1 - _CEIL_RTOL)).astype(jnp.int32)


def num_samples(p, *, n_max: int, q: float = 0.99) -> jax.Array:
  """min(N(p), n_max) elementwise, int32; p of any shape, clipped to [1e-4, 1 - 1e-4]."""
  _check_q(q)
  check_integer("n_max", n_max)
  return jnp.minimum(_uncapped(_check_p(p, "p"), q), n_max)


def num_beams(p_xK, *, m_max: int, q: float = 0.99) -> jax.Array:
  """IAS-of-K: how many of the K candidate beams to keep, int32 of shape p_xK.shape[:-1].

  With the beams' probabilities sorted descending p_1 >= ... >= p_K (sorted here), keep the
  smallest k with k * m_max >= N(p_k) (the k kept beams, m_max expansions each, are enough
  for the weakest of them), and all K if no k qualifies. N is not capped here. This is the
  rule of the paper's code (`determine_K` in young-j-park/prm-calibration, utils/ias.py).
  Example, m_max = 8: p = (0.3, 0.3, 0.1) has N = (13, 13, 44): k = 1 fails (8 < 13),
  k = 2 holds (16 >= 13) -> 2 beams.
  """
  _check_q(q)
  check_integer("m_max", m_max)
  p_xK = _check_p(p_xK, "p_xK")
  if p_xK.ndim < 1 or p_xK.shape[-1] < 1:
    raise ValueError(f"p_xK must have a last axis of K >= 1 beams, got shape {p_xK.shape}")
  k_K = jnp.arange(1, p_xK.shape[-1] + 1)
  sort = np.sort if isinstance(p_xK, np.ndarray) else jnp.sort
  enough_xK = k_K * m_max >= _uncapped(-sort(-p_xK, axis=-1), q)
  # argmax gives the first True; with none, all K beams are kept.
  return jnp.where(enough_xK.any(-1), jnp.argmax(enough_xK, -1) + 1, p_xK.shape[-1]).astype(jnp.int32)


def num_expansions(p_xK, *, m_max: int, q: float = 0.99) -> jax.Array:
  """IAS-of-M: expansions per beam, min(ceil(N(min_k p_k) / K), m_max), over the K beams.

  The K beams together draw N(weakest beam) samples (paper's code: `determine_M`).
  """
  _check_q(q)
  check_integer("m_max", m_max)
  p_xK = _check_p(p_xK, "p_xK")
  if p_xK.ndim < 1 or p_xK.shape[-1] < 1:
    raise ValueError(f"p_xK must have a last axis of K >= 1 beams, got shape {p_xK.shape}")
  n_x = _uncapped(p_xK.min(-1), q)
  k = p_xK.shape[-1]
  return jnp.minimum((n_x + k - 1) // k, m_max).astype(jnp.int32)
