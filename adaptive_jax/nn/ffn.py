"""SwiGLU feed-forward block: down(silu(x @ gate) * (x @ up)), with a hand-written backward.

The backward pass is written out so that an optimization barrier can sit between the
elementwise gradient and the backward matmuls: without it XLA:CPU fuses the elementwise math
into the operand transposes of those matmuls, a loop that ran the FFN backward 3x slower than
its parts (measured at duo_small; benchmarks/duo_step.py). On other backends the barrier only
fixes a fusion boundary. Gradients equal jax.grad of the plain expression (tests/test_ffn.py).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.quantize import Int8Kernel, kernel, project


def _forward(x_BxTxD, gate_DxF, up_DxF, down_FxD):
  g_BxTxF = jnp.einsum("btd,df->btf", x_BxTxD, gate_DxF)
  u_BxTxF = jnp.einsum("btd,df->btf", x_BxTxD, up_DxF)
  h_BxTxF = nn.with_logical_constraint(jax.nn.silu(g_BxTxF) * u_BxTxF, ("batch", "length", "mlp"))
  return jnp.einsum("btf,fd->btd", h_BxTxF, down_FxD), (g_BxTxF, u_BxTxF, h_BxTxF)


@jax.custom_vjp
def swiglu(x_BxTxD, gate_DxF, up_DxF, down_FxD):
  """The SwiGLU map on explicit weights (so it can sit inside lax.cond or a gather)."""
  return _forward(x_BxTxD, gate_DxF, up_DxF, down_FxD)[0]


def swiglu_if_used(used, x_BxTxD, weights):
  """swiglu on (gate, up, down) `weights` when `used`, else zeros: lax.cond skips an FFN that
  no token takes."""
  return lax.cond(used, lambda: swiglu(x_BxTxD, *weights), lambda: jnp.zeros_like(x_BxTxD))


def _swiglu_fwd(x_BxTxD, gate_DxF, up_DxF, down_FxD):
  out_BxTxD, (g_BxTxF, u_BxTxF, h_BxTxF) = _forward(x_BxTxD, gate_DxF, up_DxF, down_FxD)
  return out_BxTxD, (x_BxTxD, gate_DxF, up_DxF, down_FxD, g_BxTxF, u_BxTxF, h_BxTxF)


def _swiglu_bwd(residuals, dout_BxTxD):
  x_BxTxD, gate_DxF, up_DxF, down_FxD, g_BxTxF, u_BxTxF, h_BxTxF = residuals
  ddown_FxD = jnp.einsum("btf,btd->fd", h_BxTxF, dout_BxTxD)
  dh_BxTxF = jnp.einsum("btd,fd->btf", dout_BxTxD, down_FxD)
  sig_BxTxF = jax.nn.sigmoid(g_BxTxF)
  # d silu(g) / dg = sigmoid(g) * (1 + g * (1 - sigmoid(g)))
  dg_BxTxF = dh_BxTxF * u_BxTxF * sig_BxTxF * (1 + g_BxTxF * (1 - sig_BxTxF))
  du_BxTxF = dh_BxTxF * g_BxTxF * sig_BxTxF
  dg_BxTxF, du_BxTxF = lax.optimization_barrier((dg_BxTxF, du_BxTxF))
  dx_BxTxD = (jnp.einsum("btf,df->btd", dg_BxTxF, gate_DxF)
              + jnp.einsum("btf,df->btd", du_BxTxF, up_DxF))
  dgate_DxF = jnp.einsum("btd,btf->df", x_BxTxD, dg_BxTxF)
  dup_DxF = jnp.einsum("btd,btf->df", x_BxTxD, du_BxTxF)
  return dx_BxTxD, dgate_DxF, dup_DxF, ddown_FxD


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


class SwiGLU(nn.Module):
  """Holds one SwiGLU's weights; `weights()` returns them cast to the activation dtype."""
  cfg: ModelConfig
  d_ff: int

  @nn.compact
  def weights(self):
    cfg = self.cfg
    init = nn.initializers.lecun_normal()
    gate = kernel(self, "gate", init, ("embed", "mlp"), (cfg.d_model, self.d_ff), cfg)
    up = kernel(self, "up", init, ("embed", "mlp"), (cfg.d_model, self.d_ff), cfg)
    down = kernel(self, "down", init, ("mlp", "embed"), (self.d_ff, cfg.d_model), cfg)
    if isinstance(gate, Int8Kernel):  # int8_matvec "cpu": multiplied by `project`
      return gate.matrix(*gate.q.shape), up.matrix(*up.q.shape), down.matrix(*down.q.shape)
    return tuple(w.astype(cfg.activation_dtype) for w in (gate, up, down))

  def __call__(self, x_BxTxD):
    weights = self.weights()
    if isinstance(weights[0], Int8Kernel):  # inference only: no custom backward
      gate, up, down = weights
      dtype = self.cfg.activation_dtype
      h_BxTxF = jax.nn.silu(project(x_BxTxD, gate, dtype)) * project(x_BxTxD, up, dtype)
      return project(h_BxTxF, down, dtype)
    return swiglu(x_BxTxD, *weights)
