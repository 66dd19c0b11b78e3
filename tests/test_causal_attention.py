"""Blocked causal attention against jax.nn.dot_product_attention's full [T, T] scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.nn.attention import causal_attention, query_block


def _qkv(t, n=6, k=2, h=8, b=2, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(t), 3)
  return (jax.random.normal(keys[0], (b, t, n, h), dtype),
          jax.random.normal(keys[1], (b, t, k, h), dtype),
          jax.random.normal(keys[2], (b, t, k, h), dtype))


def test_query_block_sizes():
  assert [query_block(t) for t in (1, 32, 128, 512, 513, 2048)] == [32, 32, 32, 32, 33, 128]


@pytest.mark.parametrize("t", [1, 5, 32, 33, 100, 600])  # one block, whole blocks, a ragged end
def test_equals_full_scores_with_grouped_queries(t):
  q, k, v = _qkv(t)
  want = jax.nn.dot_product_attention(q, k, v, is_causal=True)
  np.testing.assert_allclose(jax.jit(causal_attention)(q, k, v), want, atol=2e-6, rtol=2e-6)


def test_segments_see_only_their_own_tokens():
  q, k, v = _qkv(70)
  segment_ids = jnp.asarray([[1] * 30 + [2] * 25 + [3] * 15, [1] * 60 + [2] * 10])
  mask = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
  want = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True)
  got = jax.jit(causal_attention)(q, k, v, segment_ids)
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=2e-6)
  # A packed segment equals the same tokens attended alone.
  alone = causal_attention(q[:1, 30:55], k[:1, 30:55], v[:1, 30:55])
  np.testing.assert_allclose(got[:1, 30:55], alone, atol=2e-6, rtol=2e-6)


def test_bfloat16_inputs_give_bfloat16_close_to_float32():
  q, k, v = _qkv(40, dtype=jnp.bfloat16)
  got = causal_attention(q, k, v)
  assert got.dtype == jnp.bfloat16
  want = jax.nn.dot_product_attention(*(x.astype(jnp.float32) for x in (q, k, v)), is_causal=True)
  np.testing.assert_allclose(got.astype(jnp.float32), want, atol=3e-2, rtol=3e-2)
