r"""Sparse dispatch: does compute follow the budget? The model's own path (`Transformer` with
`model.ffn_impl = "dispatch"`) at duo_small's shapes, timed at every budget 0..L side by side,
with the masked dense model beside it.

  python -m benchmarks.dispatch --batch=16 --seq_len=128 --repeats=5

duo_small's 12 layers (D=128, 4 heads of 32, F_big=512, F_small=32; random init), the model's
forward to its final-normed hidden states (`output="hidden"`: no logits, as the FLOP model
counts none). At budget k every token takes BIG at k of the L layers (drawn at random per
token) and SMALL at the others; the model's dispatch buffers are sized from the budget,
`model.dispatch_big_fraction = k / L x factor` and `dispatch_small_fraction = (1 - k / L) x
factor` (capped at 1), so at k = 0 no big FFN runs and the small FFN runs densely on every
token with no gather (a route whose buffer covers every token is run in place,
nn/dispatch.py). The masked dense model (both FFNs on every token, then a select) runs at
k = L / 2. Sparse and masked outputs are checked equal where no token overflowed. All runs in
one process, interleaved (rotating order), median of --repeats.

Lines: per budget the time, its share of the all-big time, and the FLOP share
(`routing.FlopModel`: attention plus the routed FFN per token and layer, logits excluded);
then `flop_ratio = <x>` (all-small / all-big FLOPs; about 0.34 at these shapes) and last
`sparse_all_small/sparse_all_big = <r>` (time ratio). Goal: r <= 1.3 x flop_ratio.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from adaptive_jax import routing
from adaptive_jax.nn import dispatch
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.routing import Route
from benchmarks.timing import time_interleaved

_BATCH = flags.DEFINE_integer("batch", 16, "Sequences per batch.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "Tokens per sequence.")
_CAPACITY_FACTOR = flags.DEFINE_float(
    "capacity_factor", 1.25, "Rows per route = expected tokens x this, rounded up to 8.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved timed runs of each path.")

MODEL = ModelConfig(vocab_size=256, num_layers=12, d_model=128, num_heads=4, head_dim=32,
                    d_ff_big=512, d_ff_small=32, max_len=128)  # configs/duo_small.py's widths


def budget_config(k: int, factor: float) -> ModelConfig:
  """The model with dispatch buffers sized for budget k of L layers."""
  share = k / MODEL.num_layers
  return dataclasses.replace(MODEL, ffn_impl="dispatch",
                             dispatch_big_fraction=min(1.0, share * factor),
                             dispatch_small_fraction=min(1.0, (1 - share) * factor))


@functools.partial(jax.jit, static_argnames=("cfg",))
def forward(params, tokens_BxT, route_BxTxL, *, cfg: ModelConfig):
  """(final-normed hidden states, overflow per route summed over layers)."""
  h_BxTxD, state = Transformer(cfg).apply({"params": params}, tokens_BxT, route_BxTxL=route_BxTxL,
                                          output="hidden", mutable=["intermediates"])
  return h_BxTxD, dispatch.overflow(state)


def budget_routes(key, shape_BxT, num_layers: int, budget: int):
  """route_BxTxL: each token BIG at `budget` of the layers, drawn uniformly, SMALL elsewhere."""
  rank_BxTxL = jnp.argsort(jnp.argsort(jax.random.uniform(key, (*shape_BxT, num_layers)), -1), -1)
  return jnp.where(rank_BxTxL < budget, Route.BIG, Route.SMALL).astype(jnp.int32)


def main(argv):
  del argv
  cfg, b, t = MODEL, _BATCH.value, _SEQ_LEN.value
  num_layers, n, factor = cfg.num_layers, b * t, _CAPACITY_FACTOR.value
  tokens_BxT = jax.random.randint(jax.random.key(1), (b, t), 0, cfg.vocab_size)
  params = nn.meta.unbox(Transformer(cfg).init(
      jax.random.key(0), tokens_BxT[:1], route_BxTxL=jnp.ones((1, t, num_layers), jnp.int32)))
  params = params["params"]
  runs, overflow, routes = {}, {}, {}
  for k in range(num_layers + 1):
    routes[k] = budget_routes(jax.random.key(2 + k), (b, t), num_layers, k)
    run = functools.partial(forward, params, tokens_BxT, routes[k], cfg=budget_config(k, factor))
    runs[f"sparse_{k}"] = lambda run=run: run()[0]
    overflow[k] = np.asarray(run()[1])
  half = num_layers // 2
  runs["masked"] = lambda: forward(params, tokens_BxT, routes[half], cfg=cfg)[0]
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
  masked_share = masked_flops / budget_flops[num_layers]
  print(f"masked dense (budget {half}): {seconds['masked'] * 1e3:8.2f} ms  time share "
        f"{seconds['masked'] / all_big:.3f}  flop share {masked_share:.3f}")
  print(f"flop_ratio = {budget_flops[0] / budget_flops[num_layers]:.4f}")
  print(f"sparse_all_small/sparse_all_big = {seconds['sparse_0'] / all_big:.4f}")


if __name__ == "__main__":
  app.run(main)
