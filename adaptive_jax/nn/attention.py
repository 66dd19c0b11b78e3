"""Causal multi-head self-attention with rotary positions (never routed)."""

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

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT):
    cfg = self.cfg
    qkv_shape = (cfg.d_model, cfg.num_heads, cfg.head_dim)
    qkv_axes = ("embed", "heads", "kv")
    q_DxNxH, k_DxNxH, v_DxNxH = (
        self.param(name, nn.with_logical_partitioning(_QKV_INIT, qkv_axes), qkv_shape,
                   cfg.weight_dtype).astype(cfg.activation_dtype)
        for name in ("query", "key", "value"))
    out_NxHxD = self.param(
        "out", nn.with_logical_partitioning(_OUT_INIT, ("heads", "kv", "embed")),
        (cfg.num_heads, cfg.head_dim, cfg.d_model), cfg.weight_dtype).astype(cfg.activation_dtype)

    q_BxTxNxH = jnp.einsum("btd,dnh->btnh", x_BxTxD, q_DxNxH)
    k_BxTxNxH = jnp.einsum("btd,dnh->btnh", x_BxTxD, k_DxNxH)
    v_BxTxNxH = jnp.einsum("btd,dnh->btnh", x_BxTxD, v_DxNxH)
    q_BxTxNxH = apply_rope(q_BxTxNxH, positions_BxT, theta=cfg.rope_theta)
    k_BxTxNxH = apply_rope(k_BxTxNxH, positions_BxT, theta=cfg.rope_theta)
    q_BxTxNxH = nn.with_logical_constraint(q_BxTxNxH, ("batch", "length", "heads", "kv"))
    out_BxTxNxH = jax.nn.dot_product_attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, is_causal=True)
    out_BxTxD = jnp.einsum("btnh,nhd->btd", out_BxTxNxH, out_NxHxD)
    return nn.with_logical_constraint(out_BxTxD, ("batch", "length", "embed"))
