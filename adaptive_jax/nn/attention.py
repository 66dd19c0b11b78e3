"""Causal self-attention with rotary positions (never routed), multi-head or grouped-query.

N query heads share K = cfg.kv_heads key/value heads: query head n reads kv head n // (N / K)
(K = N: multi-head attention; K = 1: multi-query). N = 9, K = 3: heads 0-2 read kv head 0,
3-5 kv head 1, 6-8 kv head 2, the grouping of `jax.nn.dot_product_attention` and of Llama.

`__call__` attends over the call's own tokens (causal, optionally inside segments); `cached`
writes the tokens' keys and values into a `KVCache` and attends over it (prefill, decode,
incremental scoring). `qkv` and `project_out` expose the two halves for the sequential
oracle, which attends over a cache plus tree nodes outside it. `cached_attention` is the one
softmax attention: over a cache, and, block by block, over the call's own tokens
(`causal_attention`).

Letters here: N query heads, K key/value heads, G = N / K query heads per kv head, H head
width, S cache slots.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.kv_cache import CacheAccess, KVCache
from adaptive_jax.nn.quantize import as_matrix, kernel, project, shape_of
from adaptive_jax.nn.rope import apply_rope

# Fan-in initialization of [D, N, H] (in: D) and [N, H, D] (in: N*H) projection kernels.
_QKV_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0,
                                             out_axis=(1, 2))
_OUT_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=(0, 1),
                                             out_axis=2)


class Attention(nn.Module):
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    q_shape = (cfg.d_model, cfg.num_heads, cfg.head_dim)
    kv_shape = (cfg.d_model, cfg.kv_heads, cfg.head_dim)
    qkv_axes = ("embed", "heads", "kv")
    self.query = kernel(self, "query", _QKV_INIT, qkv_axes, q_shape, cfg)
    self.key = kernel(self, "key", _QKV_INIT, qkv_axes, kv_shape, cfg)
    self.value = kernel(self, "value", _QKV_INIT, qkv_axes, kv_shape, cfg)
    self.out = kernel(self, "out", _OUT_INIT, ("heads", "kv", "embed"),
                      (cfg.num_heads, cfg.head_dim, cfg.d_model), cfg)
    if cfg.qkv_bias:  # only then: models without biases keep their param trees
      bias_init = nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "kv"))
      self.query_bias = self.param("query_bias", bias_init, q_shape[1:], cfg.weight_dtype)
      self.key_bias = self.param("key_bias", bias_init, kv_shape[1:], cfg.weight_dtype)
      self.value_bias = self.param("value_bias", bias_init, kv_shape[1:], cfg.weight_dtype)

  def qkv(self, x_BxTxD, positions_BxT):
    """Queries [B, T, N, H], keys and values [B, T, K, H]; queries and keys rotated."""
    cfg = self.cfg
    def projected(name):
      # One [D, N*H] matmul, then the heads split off the output: written as a 3-axis einsum,
      # XLA's CPU layouts copied the kernel in every decode step to suit the attention after.
      kernel_DxNxH = getattr(self, name)
      d, n, h = shape_of(kernel_DxNxH)
      y_BxTxNxH = project(x_BxTxD, as_matrix(kernel_DxNxH, d, n * h),
                          cfg.activation_dtype).reshape(*x_BxTxD.shape[:2], n, h)
      if cfg.qkv_bias:
        y_BxTxNxH += getattr(self, f"{name}_bias").astype(cfg.activation_dtype)
      return y_BxTxNxH
    rope = lambda x: apply_rope(x, positions_BxT, theta=cfg.rope_theta, scaling=cfg.rope_scaling)
    q_BxTxNxH = nn.with_logical_constraint(rope(projected("query")),
                                           ("batch", "length", "heads", "kv"))
    return q_BxTxNxH, rope(projected("key")), projected("value")

  def project_out(self, o_BxTxNxH):
    # Heads merged on the (small) activation, not on the kernel: see `qkv`.
    n, h, d = shape_of(self.out)
    out_BxTxD = project(o_BxTxNxH.reshape(*o_BxTxNxH.shape[:2], n * h),
                        as_matrix(self.out, n * h, d), self.cfg.activation_dtype)
    return nn.with_logical_constraint(out_BxTxD, ("batch", "length", "embed"))

  def __call__(self, x_BxTxD, positions_BxT, segment_ids_BxT=None):
    """Causal attention; with `segment_ids_BxT` (packed rows) a token sees only earlier tokens
    of its own segment, as flax's lm1b example masks packed examples."""
    q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = self.qkv(x_BxTxD, positions_BxT)
    return self.project_out(causal_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segment_ids_BxT))

  def cached(self, x_BxTxD, positions_BxT, cache: KVCache, layer, access: CacheAccess):
    """Writes this layer's keys and values at `access.slot` .., then attends over the cache:
    (out_BxTxD, cache)."""
    q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = self.qkv(x_BxTxD, positions_BxT)
    cache = cache.write(layer, access.slot, k_BxTxKxH, v_BxTxKxH)
    k_cache_BxKxSxH, v_cache_BxKxSxH = cache.layer(layer)
    o_BxTxNxH = cached_attention(q_BxTxNxH, k_cache_BxKxSxH, v_cache_BxKxSxH, access.mask_BxTxS)
    return self.project_out(o_BxTxNxH), cache


def query_block(t: int) -> int:
  """Queries per block of `causal_attention` for T tokens: 32, and T / 16 past 512 tokens (at
  most 16 blocks, so long rows do not unroll into many small products)."""
  return max(32, -(-t // 16))


def causal_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segment_ids_BxT=None):
  """Causal softmax attention of T tokens over themselves, in blocks of `query_block(T)`
  queries: block [s, e) attends over keys [0, e) only (`cached_attention`, the keys as its
  cache), so the score blocks above the diagonal are never computed. With segment ids (packed
  rows) a token also sees only its own segment, as flax's lm1b example masks packed examples.

  Equal to `jax.nn.dot_product_attention(..., is_causal=True)` to float32 rounding; on 2 CPU
  cores 1.8-2.1x faster at duo_small's T = 128 (4 heads of 32), 2.6x at T = 256 with grouped
  queries (9 on 3 heads of 64), 1.2x at T = 72: the full [T, T] scores spill the cache,
  blocks of 32 rows do not (measured interleaved, median of 15).
  """
  b, t = q_BxTxNxH.shape[:2]
  k_BxKxTxH, v_BxKxTxH = (jnp.swapaxes(x, 1, 2) for x in (k_BxTxKxH, v_BxTxKxH))
  position_T = jnp.arange(t)
  block, out = query_block(t), []
  for start in range(0, t, block):
    end = min(start + block, t)
    mask_BxQxE = jnp.broadcast_to(position_T[None, :end] <= position_T[start:end, None],
                                  (b, end - start, end))
    if segment_ids_BxT is not None:
      mask_BxQxE &= segment_ids_BxT[:, start:end, None] == segment_ids_BxT[:, None, :end]
    out.append(cached_attention(q_BxTxNxH[:, start:end], k_BxKxTxH[:, :, :end],
                                v_BxKxTxH[:, :, :end], mask_BxQxE))
  return jnp.concatenate(out, axis=1)


def cached_attention(q_BxTxNxH, k_cache_BxKxSxH, v_cache_BxKxSxH, mask_BxTxS,
                     self_k_BxTxKxH=None, self_v_BxTxKxH=None):
  """Softmax attention of T queries over a key/value cache, scale 1/sqrt(H) as the model.

  Caches are heads-major [B, K, S, H]: one-query attention over [B, S, N, H] caches (or through
  jax.nn.dot_product_attention) took 12 ms per layer on CPU at B=128, S=110; [B, N, S, H] 0.9 ms.
  Query t sees the slots where mask_BxTxS is True and, when self_k/self_v are given, its own
  key and value beside them (the sequential oracle's tree nodes, which are not in the cache).
  Grouped-query: query head n reads cache head n // (N / K), as `Attention.__call__`.
  """
  b, t, n, h = q_BxTxNxH.shape
  k, s = k_cache_BxKxSxH.shape[1], k_cache_BxKxSxH.shape[2]
  q_BxTxKxGxH = q_BxTxNxH.reshape(b, t, k, n // k, h)
  scale = h ** -0.5
  scores_BxKxGxTxS = jnp.einsum("btkgh,bksh->bkgts", q_BxTxKxGxH, k_cache_BxKxSxH,
                                preferred_element_type=jnp.float32) * scale
  scores_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], scores_BxKxGxTxS, -jnp.inf)
  if self_k_BxTxKxH is not None:
    self_BxKxGxT = jnp.einsum("btkgh,btkh->bkgt", q_BxTxKxGxH, self_k_BxTxKxH,
                              preferred_element_type=jnp.float32) * scale
    scores_BxKxGxTxS = jnp.concatenate([scores_BxKxGxTxS, self_BxKxGxT[..., None]], -1)
  probs = jax.nn.softmax(scores_BxKxGxTxS, axis=-1).astype(v_cache_BxKxSxH.dtype)
  # Heads-major out of the product, then moved: "bkgts,bksh->btkgh" in one einsum ran as
  # XLA:CPU's generic batched dot, 4x slower than this one plus the transpose (batch-64 decode).
  o_BxKxGxTxH = jnp.einsum("bkgts,bksh->bkgth", probs[..., :s], v_cache_BxKxSxH)
  if self_v_BxTxKxH is not None:
    o_BxKxGxTxH += jnp.einsum("bkgt,btkh->bkgth", probs[..., s], self_v_BxTxKxH)
  return jnp.moveaxis(o_BxKxGxTxH, 3, 1).reshape(b, t, n, h)
