"""Causal multi-head self-attention with rotary positions (never routed).

Besides the full causal call, `qkv` and `project_out` expose the two halves so that callers
with their own key/value caches (decoding, the sequential oracle) reuse the same weights.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from adaptive_jax.nn.config import ModelConfig
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
    qkv_shape = (cfg.d_model, cfg.num_heads, cfg.head_dim)
    qkv_init = nn.with_logical_partitioning(_QKV_INIT, ("embed", "heads", "kv"))
    self.query = self.param("query", qkv_init, qkv_shape, cfg.weight_dtype)
    self.key = self.param("key", qkv_init, qkv_shape, cfg.weight_dtype)
    self.value = self.param("value", qkv_init, qkv_shape, cfg.weight_dtype)
    self.out = self.param("out", nn.with_logical_partitioning(_OUT_INIT, ("heads", "kv", "embed")),
                          (cfg.num_heads, cfg.head_dim, cfg.d_model), cfg.weight_dtype)

  def qkv(self, x_BxTxD, positions_BxT):
    """Queries, keys (both rotated to their positions) and values, each [B, T, N, H]."""
    cfg = self.cfg
    project = lambda w: jnp.einsum("btd,dnh->btnh", x_BxTxD, w.astype(cfg.activation_dtype))
    q_BxTxNxH = apply_rope(project(self.query), positions_BxT, theta=cfg.rope_theta)
    k_BxTxNxH = apply_rope(project(self.key), positions_BxT, theta=cfg.rope_theta)
    q_BxTxNxH = nn.with_logical_constraint(q_BxTxNxH, ("batch", "length", "heads", "kv"))
    return q_BxTxNxH, k_BxTxNxH, project(self.value)

  def project_out(self, o_BxTxNxH):
    out_BxTxD = jnp.einsum("btnh,nhd->btd", o_BxTxNxH, self.out.astype(self.cfg.activation_dtype))
    return nn.with_logical_constraint(out_BxTxD, ("batch", "length", "embed"))

  def __call__(self, x_BxTxD, positions_BxT):
    q_BxTxNxH, k_BxTxNxH, v_BxTxNxH = self.qkv(x_BxTxD, positions_BxT)
    o_BxTxNxH = jax.nn.dot_product_attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, is_causal=True)
    return self.project_out(o_BxTxNxH)
