r"""Sparse dispatch: does compute follow the budget? A duo_small-shaped layer stack, timed at
every budget 0..L side by side, with the masked dense path beside it.

  python -m benchmarks.dispatch --batch=16 --seq_len=128 --repeats=5

A stack of duo_small's 12 layers (D=128, 4 heads of 32, F_big=512, F_small=32; random init),
each x <- x + attention(norm(x)), then x <- x + ffn(norm(x)), under one `lax.scan`. At budget k
every token takes BIG at k of the L layers (drawn at random per token) and SMALL at the
others; sparse dispatch (`dispatch.dispatch_ffn`) sizes each layer's buffers from the budget:
`capacity(N, k / L, factor)` BIG rows and `capacity(N, 1 - k / L, factor)` SMALL rows, so at
k = 0 no big FFN runs at all. The masked dense path (`DuoFFN`: both FFNs on every token, then
a select) runs at k = L / 2. Sparse and masked outputs are checked equal where no token
overflowed. All paths are timed in one process, interleaved, median of --repeats.

Lines: per budget the time, its share of the all-big time, and the FLOP share
(`routing.FlopModel`: attention plus the routed FFN per token and layer, logits excluded);
then `flop_ratio = <x>` (all-small / all-big FLOPs; about 0.34 at these shapes) and last
`sparse_all_small/sparse_all_big = <r>` (time ratio). Goal: r <= 1.3 x flop_ratio.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from adaptive_jax import routing
from adaptive_jax.nn import dispatch
from adaptive_jax.nn.attention import Attention
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.duo_ffn import DuoFFN
from adaptive_jax.routing import Route
from benchmarks.timing import time_interleaved

_BATCH = flags.DEFINE_integer("batch", 16, "Sequences per batch.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "Tokens per sequence.")
_CAPACITY_FACTOR = flags.DEFINE_float(
    "capacity_factor", 1.25, "Rows per route = expected tokens x this, rounded up to 8.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved timed runs of each path.")

MODEL = ModelConfig(vocab_size=256, num_layers=12, d_model=128, num_heads=4, head_dim=32,
                    d_ff_big=512, d_ff_small=32, max_len=128)  # configs/duo_small.py's widths


def _rms_norm(x_BxTxD):
  return x_BxTxD * jax.lax.rsqrt(jnp.mean(x_BxTxD**2, -1, keepdims=True) + 1e-6)


def _attention(cfg, params, x_BxTxD):
  positions_BxT = jnp.broadcast_to(jnp.arange(x_BxTxD.shape[1]), x_BxTxD.shape[:2])
  return x_BxTxD + Attention(cfg).apply({"params": params}, _rms_norm(x_BxTxD), positions_BxT)


@functools.partial(jax.jit, static_argnames=("cfg",))
def masked_stack(params_L, x_BxTxD, route_LxBxT, *, cfg):
  def layer(x, inputs):
    params, route_BxT = inputs
    x = _attention(cfg, params["attention"], x)
    return x + DuoFFN(cfg).apply({"params": params["ffn"]}, _rms_norm(x), route_BxT=route_BxT), None
  return jax.lax.scan(layer, x_BxTxD, (params_L, route_LxBxT))[0]


@functools.partial(jax.jit, static_argnames=("cfg", "capacity_small", "capacity_big"))
def sparse_stack(params_L, x_BxTxD, route_LxBxT, *, cfg, capacity_small, capacity_big):
  """The stack by sparse dispatch; also returns the overflow per route summed over layers."""
  def layer(x, inputs):
    params, route_BxT = inputs
    x = _attention(cfg, params["attention"], x)
    y, _, overflow_R = dispatch.dispatch_ffn(params["ffn"], _rms_norm(x), route_BxT, cfg=cfg,
                                             capacity_small=capacity_small,
                                             capacity_big=capacity_big)
    return x + y, overflow_R
  x_BxTxD, overflow_LxR = jax.lax.scan(layer, x_BxTxD, (params_L, route_LxBxT))
  return x_BxTxD, overflow_LxR.sum(0)


def budget_routes(key, shape_BxT, num_layers: int, budget: int):
  """route_LxBxT: each token BIG at `budget` of the layers, drawn uniformly, SMALL elsewhere."""
  rank_BxTxL = jnp.argsort(jnp.argsort(jax.random.uniform(key, (*shape_BxT, num_layers)), -1), -1)
  route_BxTxL = jnp.where(rank_BxTxL < budget, Route.BIG, Route.SMALL).astype(jnp.int32)
  return jnp.moveaxis(route_BxTxL, -1, 0)


def main(argv):
  del argv
  cfg, b, t = MODEL, _BATCH.value, _SEQ_LEN.value
  num_layers, n, factor = cfg.num_layers, b * t, _CAPACITY_FACTOR.value
  x_BxTxD = jax.random.normal(jax.random.key(1), (b, t, cfg.d_model))
  positions_1xT = jnp.arange(t)[None]
  init = jax.vmap(lambda k: {
      "attention": nn.meta.unbox(Attention(cfg).init(k, x_BxTxD[:1], positions_1xT)["params"]),
      "ffn": nn.meta.unbox(DuoFFN(cfg).init(k, x_BxTxD[:1],
                                            route_BxT=jnp.ones((1, t), jnp.int32))["params"])})
  params_L = init(jax.random.split(jax.random.key(0), num_layers))
  runs, overflow, routes = {}, {}, {}
  for k in range(num_layers + 1):
    routes[k] = budget_routes(jax.random.key(2 + k), (b, t), num_layers, k)
    caps = dict(capacity_small=dispatch.capacity(n, 1 - k / num_layers, factor),
                capacity_big=dispatch.capacity(n, k / num_layers, factor))
    run = functools.partial(sparse_stack, params_L, x_BxTxD, routes[k], cfg=cfg, **caps)
    runs[f"sparse_{k}"] = lambda run=run: run()[0]
    overflow[k] = np.asarray(run()[1])
  half = num_layers // 2
  runs["masked"] = lambda: masked_stack(params_L, x_BxTxD, routes[half], cfg=cfg)
  if overflow[half].sum() == 0:  # with drops the paths differ by design (dropped tokens skip)
    np.testing.assert_allclose(runs[f"sparse_{half}"](), runs["masked"](), atol=1e-4, rtol=1e-4,
                               err_msg="sparse dispatch and masked dense disagree")
  flops = routing.FlopModel(cfg.d_model, cfg.d_ff_small, cfg.d_ff_big, context=t / 2)
  budget_flops = {k: flops.attention() + (k * flops.ffn(Route.BIG) + (num_layers - k)
                                          * flops.ffn(Route.SMALL)) / num_layers
                  for k in range(num_layers + 1)}
  seconds = time_interleaved(runs, _REPEATS.value)
  print(f"{num_layers} Duo layers, {b}x{t} = {n} tokens, D={cfg.d_model}, F_big={cfg.d_ff_big}, "
        f"F_small={cfg.d_ff_small}, capacity factor {factor}; device "
        f"{jax.devices()[0].device_kind}, median of {_REPEATS.value}")
  all_big = seconds[f"sparse_{num_layers}"]
  for k in range(num_layers + 1):
    time_share = seconds[f"sparse_{k}"] / all_big
    flop_share = budget_flops[k] / budget_flops[num_layers]
    print(f"budget {k:>2}: {seconds[f'sparse_{k}'] * 1e3:8.2f} ms  time share {time_share:.3f}  "
          f"flop share {flop_share:.3f}  time/flop {time_share / flop_share:.2f}  overflow "
          f"(SKIP, SMALL, BIG) {overflow[k].tolist()}")
  masked_flops = flops.masked_dense_flops(num_layers) / num_layers
  print(f"masked dense (budget {half}): {seconds['masked'] * 1e3:8.2f} ms  time share "
        f"{seconds['masked'] / all_big:.3f}  flop share {masked_flops / budget_flops[num_layers]:.3f}")
  print(f"flop_ratio = {budget_flops[0] / budget_flops[num_layers]:.4f}")
  print(f"sparse_all_small/sparse_all_big = {seconds['sparse_0'] / all_big:.4f}")


if __name__ == "__main__":
  app.run(main)
