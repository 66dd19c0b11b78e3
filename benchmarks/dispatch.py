r"""Sparse dispatch vs masked dense Duo-FFN on a duo_small-width FFN stack: time vs FLOPs.

  python -m benchmarks.dispatch --batch=16 --seq_len=128 --layers=12 --p_big=0.25 --repeats=7

A stack of `--layers` Duo-FFN layers at duo_small's widths (D=128, F_big=512, F_small=32),
x <- x + ffn(rms_norm(x)) under one `lax.scan`, with stage-1 random routes per token and layer
(BIG w.p. p_big, else SMALL). Both paths get the same params and routes, timed in one process,
interleaved, median of --repeats:
- masked: `DuoFFN`, both FFNs on every token, select per token;
- sparse: `dispatch.dispatch_ffn` with capacities `dispatch.capacity(N, share, factor)` per
  route (share p_big for BIG, 1 - p_big for SMALL).
The outputs are checked equal (no token overflows at the default factor; the overflow count is
printed). The last two lines are `sparse_flops/masked_flops = <ratio>` (FFN FLOPs only, from
`routing.FlopModel`: capacity rows x each FFN vs every token x both FFNs) and
`sparse/masked = <ratio>` (median time ratio).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from adaptive_jax import routing
from adaptive_jax.nn import dispatch
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.duo_ffn import DuoFFN
from adaptive_jax.routing import Route
from benchmarks.timing import time_interleaved

_BATCH = flags.DEFINE_integer("batch", 16, "Sequences per batch.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "Tokens per sequence.")
_LAYERS = flags.DEFINE_integer("layers", 12, "Duo-FFN layers in the stack (duo_small: 12).")
_P_BIG = flags.DEFINE_float("p_big", 0.25, "Probability of BIG per token and layer, else SMALL.")
_CAPACITY_FACTOR = flags.DEFINE_float(
    "capacity_factor", 1.25, "Rows per route = expected tokens x this, rounded up to 8.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Interleaved timed runs of each path.")

MODEL = ModelConfig(vocab_size=256, num_layers=12, d_model=128, num_heads=4, head_dim=32,
                    d_ff_big=512, d_ff_small=32, max_len=128)  # configs/duo_small.py's widths


def _rms_norm(x_BxTxD):
  return x_BxTxD * jax.lax.rsqrt(jnp.mean(x_BxTxD**2, -1, keepdims=True) + 1e-6)


@functools.partial(jax.jit, static_argnames=("cfg",))
def masked_stack(params_L, x_BxTxD, route_LxBxT, *, cfg):
  def layer(x, inputs):
    params, route_BxT = inputs
    return x + DuoFFN(cfg).apply({"params": params}, _rms_norm(x), route_BxT=route_BxT), None
  return jax.lax.scan(layer, x_BxTxD, (params_L, route_LxBxT))[0]


@functools.partial(jax.jit, static_argnames=("cfg", "capacity_small", "capacity_big"))
def sparse_stack(params_L, x_BxTxD, route_LxBxT, *, cfg, capacity_small, capacity_big):
  """The stack by sparse dispatch; also returns the overflow per route summed over layers."""
  def layer(x, inputs):
    params, route_BxT = inputs
    y, _, overflow_R = dispatch.dispatch_ffn(params, _rms_norm(x), route_BxT, cfg=cfg,
                                             capacity_small=capacity_small,
                                             capacity_big=capacity_big)
    return x + y, overflow_R
  x_BxTxD, overflow_LxR = jax.lax.scan(layer, x_BxTxD, (params_L, route_LxBxT))
  return x_BxTxD, overflow_LxR.sum(0)


def main(argv):
  del argv
  cfg, b, t, num_layers, p_big = MODEL, _BATCH.value, _SEQ_LEN.value, _LAYERS.value, _P_BIG.value
  n = b * t
  x_BxTxD = jax.random.normal(jax.random.key(1), (b, t, cfg.d_model))
  route_LxBxT = jnp.moveaxis(routing.random_routes(jax.random.key(2), (b, t, num_layers),
                                                   p_big=p_big), -1, 0)
  init = jax.vmap(lambda k: nn.meta.unbox(DuoFFN(cfg).init(
      k, x_BxTxD[:1], route_BxT=route_LxBxT[0, :1])["params"]))
  params_L = init(jax.random.split(jax.random.key(0), num_layers))
  caps = dict(capacity_small=dispatch.capacity(n, 1 - p_big, _CAPACITY_FACTOR.value),
              capacity_big=dispatch.capacity(n, p_big, _CAPACITY_FACTOR.value))
  runs = {
      "masked": lambda: masked_stack(params_L, x_BxTxD, route_LxBxT, cfg=cfg),
      "sparse": lambda: sparse_stack(params_L, x_BxTxD, route_LxBxT, cfg=cfg, **caps)[0],
  }
  overflow_R = np.asarray(sparse_stack(params_L, x_BxTxD, route_LxBxT, cfg=cfg, **caps)[1])
  if overflow_R.sum() == 0:  # with drops the paths differ by design (dropped tokens skip)
    np.testing.assert_allclose(runs["sparse"](), runs["masked"](), atol=1e-4, rtol=1e-4,
                               err_msg="sparse dispatch and masked dense disagree")
  flops = routing.FlopModel(cfg.d_model, cfg.d_ff_small, cfg.d_ff_big, context=t / 2)
  masked_flops = n * (flops.ffn(Route.SMALL) + flops.ffn(Route.BIG))
  sparse_flops = (caps["capacity_small"] * flops.ffn(Route.SMALL)
                  + caps["capacity_big"] * flops.ffn(Route.BIG))
  seconds = time_interleaved(runs, _REPEATS.value)
  print(f"{num_layers} Duo-FFN layers, {b}x{t} = {n} tokens, D={cfg.d_model}, "
        f"F_big={cfg.d_ff_big}, F_small={cfg.d_ff_small}, p_big={p_big}, capacity factor "
        f"{_CAPACITY_FACTOR.value}: {caps['capacity_small']} small + {caps['capacity_big']} big "
        f"rows per layer; device {jax.devices()[0].device_kind}, median of {_REPEATS.value}")
  print(f"overflowed tokens over all layers (SKIP, SMALL, BIG) = {overflow_R.tolist()}")
  for name, s in seconds.items():
    print(f"{name:>7}: {s * 1e3:8.2f} ms")
  print(f"sparse_flops/masked_flops = {sparse_flops / masked_flops:.4f}")
  print(f"sparse/masked = {seconds['sparse'] / seconds['masked']:.4f}")


if __name__ == "__main__":
  app.run(main)
