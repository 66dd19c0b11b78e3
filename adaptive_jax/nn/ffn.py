"""SwiGLU feed-forward block: down(silu(x @ gate) * (x @ up))."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from adaptive_jax.nn.config import ModelConfig


def swiglu(x_BxTxD, gate_DxF, up_DxF, down_FxD):
  """The SwiGLU map on explicit weights (so it can sit inside lax.cond or a gather)."""
  h_BxTxF = jax.nn.silu(jnp.einsum("btd,df->btf", x_BxTxD, gate_DxF))
  h_BxTxF = h_BxTxF * jnp.einsum("btd,df->btf", x_BxTxD, up_DxF)
  h_BxTxF = nn.with_logical_constraint(h_BxTxF, ("batch", "length", "mlp"))
  return jnp.einsum("btf,fd->btd", h_BxTxF, down_FxD)


class SwiGLU(nn.Module):
  """Holds one SwiGLU's weights; `weights()` returns them cast to the activation dtype."""
  cfg: ModelConfig
  d_ff: int

  @nn.compact
  def weights(self):
    cfg = self.cfg
    init = nn.initializers.lecun_normal()
    gate = self.param("gate", nn.with_logical_partitioning(init, ("embed", "mlp")),
                      (cfg.d_model, self.d_ff), cfg.weight_dtype)
    up = self.param("up", nn.with_logical_partitioning(init, ("embed", "mlp")),
                    (cfg.d_model, self.d_ff), cfg.weight_dtype)
    down = self.param("down", nn.with_logical_partitioning(init, ("mlp", "embed")),
                      (self.d_ff, cfg.d_model), cfg.weight_dtype)
    return tuple(w.astype(cfg.activation_dtype) for w in (gate, up, down))

  def __call__(self, x_BxTxD):
    return swiglu(x_BxTxD, *self.weights())
