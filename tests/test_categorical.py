"""The inverse-CDF draw against numpy references, by hand and by its frequencies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.sampler import categorical

draw = jax.jit(categorical.inverse_cdf)


def _reference(u_B, logits_BxV):
  """float64: the first j with cumsum(p)_j > u * sum(p)."""
  p_BxV = np.exp(logits_BxV - logits_BxV.max(-1, keepdims=True))
  cum_BxV = np.cumsum(p_BxV, -1)
  return np.array([np.searchsorted(c, u * c[-1], side="right") for u, c in zip(u_B, cum_BxV)])


def test_hand_example():
  logits_4xV = np.log(np.tile([[0.1, 0.2, 0.3, 0.4]], (4, 1))).astype(np.float32)
  for u, token in [(0.0, 0), (0.05, 0), (0.15, 1), (0.35, 2), (0.65, 3), (1 - 2**-24, 3)]:
    assert int(draw(jnp.full(4, u), logits_4xV)[0]) == token, u


@pytest.mark.parametrize("v", [7, categorical.BLOCK, 3 * categorical.BLOCK + 5])
def test_equals_float64_search_away_from_boundaries(v):
  rng = np.random.default_rng(v)
  logits_BxV = (3 * rng.standard_normal((512, v))).astype(np.float32)
  u_B = rng.random(512).astype(np.float32)
  got_B = np.asarray(draw(u_B, logits_BxV))
  want_B = _reference(u_B.astype(np.float64), logits_BxV.astype(np.float64))
  p_BxV = np.exp(logits_BxV - logits_BxV.max(-1, keepdims=True)).astype(np.float64)
  cum_BxV = np.cumsum(p_BxV, -1) / p_BxV.sum(-1, keepdims=True)
  # Where u lies within float32 rounding of a boundary either neighbour is a correct draw.
  near_B = np.abs(cum_BxV - u_B[:, None]).min(-1) < 1e-5
  assert np.array_equal(got_B[~near_B], want_B[~near_B])
  assert near_B.mean() < 0.05


def test_never_draws_a_zero_probability_token():
  v = 3 * categorical.BLOCK
  logits_BxV = np.full((6, v), -np.inf, np.float32)
  logits_BxV[:, [5, categorical.BLOCK + 1, 2 * categorical.BLOCK + 7]] = [0.0, 1.0, 2.0]
  logits_BxV[1, :] = -np.inf  # row 1: one token left, in the middle block
  logits_BxV[1, categorical.BLOCK + 1] = 0.0
  u_B = np.array([0.0, 0.5, 1 - 2**-24, 0.2, 0.9, 0.99999994], np.float32)
  got_B = np.asarray(draw(u_B, logits_BxV))
  assert np.isfinite(logits_BxV[np.arange(6), got_B]).all(), got_B
  assert got_B[1] == categorical.BLOCK + 1
  assert got_B[0] == 5 and got_B[2] == 2 * categorical.BLOCK + 7


def test_frequencies_match_softmax():
  logits_V = jnp.array([2.0, 0.5, -1.0, 1.0, -jnp.inf, 0.0])
  n = 200_000
  key_B = jax.random.split(jax.random.key(3), n)
  tokens_B = np.asarray(jax.jit(categorical.categorical)(key_B, jnp.tile(logits_V, (n, 1))))
  p_V = np.asarray(jax.nn.softmax(logits_V), np.float64)
  freq_V = np.bincount(tokens_B, minlength=6) / n
  assert freq_V[4] == 0
  sigma_V = np.sqrt(p_V * (1 - p_V) / n)
  assert np.all(np.abs(freq_V - p_V) <= 4.5 * sigma_V + 1e-12), (freq_V, p_V)


def test_rows_use_their_own_keys():
  logits_BxV = jnp.zeros((64, 1000))
  key_B = jax.random.split(jax.random.key(0), 64).at[32:].set(jax.random.key(1))
  tokens_B = np.asarray(categorical.categorical(key_B, logits_BxV))
  assert len(set(tokens_B[:32].tolist())) > 20  # 32 keys, 1000 equally likely tokens
  assert (tokens_B[32:] == tokens_B[32]).all()  # one key, one draw, whatever the row
  assert tokens_B.dtype == np.int32
