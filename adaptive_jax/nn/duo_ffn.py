"""Duo-FFN: a big and a small SwiGLU; each token picks SKIP, SMALL or BIG (masked dense routing).

Masked dense routing computes each FFN that some token uses on *all* tokens, then selects per
token. Worked example, B=1, T=3, route = [BIG, SKIP, SMALL]:

  big_out   = [b0, b1, b2]        (computed: route has a BIG)
  small_out = [s0, s1, s2]        (computed: route has a SMALL)
  out       = [b0, 0, s2]         select_n(route, 0, small_out, big_out) per token

An FFN that no token of the batch uses is skipped with lax.cond, so all-big routing costs what
a dense model costs. Soft routing (router training) mixes the outputs with weights over
(SKIP, SMALL, BIG); SKIP contributes zero. With `model.ffn_impl = "dispatch"`, hard routes go
through sparse dispatch instead (nn/dispatch.py: each FFN on its own tokens), the overflow of
each layer sown into the "intermediates" collection (`dispatch.overflow` reads it).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from adaptive_jax.nn import dispatch
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.ffn import SwiGLU, swiglu, swiglu_if_used
from adaptive_jax.routing import Route


class DuoFFN(nn.Module):
  cfg: ModelConfig

  def setup(self):
    self.big = SwiGLU(self.cfg, self.cfg.d_ff_big)
    self.small = SwiGLU(self.cfg, self.cfg.d_ff_small)

  def __call__(self, x_BxTxD, route_BxT=None, weights_BxTxR=None):
    """Exactly one of `route_BxT` (int route ids) or `weights_BxTxR` (soft mixture) is given."""
    if (route_BxT is None) == (weights_BxTxR is None):
      raise ValueError("DuoFFN needs exactly one of route_BxT or weights_BxTxR")
    big_w, small_w = self.big.weights(), self.small.weights()
    if weights_BxTxR is not None:
      w_BxTxR = weights_BxTxR.astype(x_BxTxD.dtype)
      return (w_BxTxR[..., Route.SMALL, None] * swiglu(x_BxTxD, *small_w)
              + w_BxTxR[..., Route.BIG, None] * swiglu(x_BxTxD, *big_w))
    if self.cfg.ffn_impl == "dispatch":
      return self._dispatch(x_BxTxD, route_BxT, small_w, big_w)
    big_BxTxD = swiglu_if_used(jnp.any(route_BxT == Route.BIG), x_BxTxD, big_w)
    small_BxTxD = swiglu_if_used(jnp.any(route_BxT == Route.SMALL), x_BxTxD, small_w)
    # select_n picks case `route` per token: 0 -> SKIP (zeros), 1 -> SMALL, 2 -> BIG.
    select_BxT = jax.vmap(jax.vmap(lax.select_n))
    return select_BxT(route_BxT, jnp.zeros_like(x_BxTxD), small_BxTxD, big_BxTxD)

  def _dispatch(self, x_BxTxD, route_BxT, small_w, big_w):
    cfg = self.cfg
    if route_BxT.size % cfg.dispatch_groups:
      raise ValueError(f"model.dispatch_groups={cfg.dispatch_groups} must divide the "
                       f"{route_BxT.size} tokens of the batch")
    tokens = route_BxT.size // cfg.dispatch_groups
    capacity_small = dispatch.capacity(tokens, cfg.dispatch_small_fraction)
    capacity_big = dispatch.capacity(tokens, cfg.dispatch_big_fraction)
    if min(capacity_small, capacity_big) < tokens and not self.is_mutable_collection(
        "intermediates"):
      # Buffers short of the batch can drop tokens; the count must reach the caller.
      raise ValueError(
          f"model.ffn_impl='dispatch' with buffers of {capacity_small} SMALL and "
          f"{capacity_big} BIG rows for {tokens} tokens can drop tokens: apply the model with "
          f"mutable=['intermediates'] and read dispatch.overflow, or set "
          f"model.dispatch_small_fraction and model.dispatch_big_fraction to 1")
    y_BxTxD, _, overflow_R = dispatch.dispatch_with_weights(
        x_BxTxD, route_BxT, small_w, big_w, capacity_small=capacity_small,
        capacity_big=capacity_big, groups=cfg.dispatch_groups)
    self.sow("intermediates", dispatch.OVERFLOW, overflow_R)
    return y_BxTxD
