r"""Duo train step vs a dense train step of the same shapes: measured time ratio vs FLOP ratio.

  python -m benchmarks.duo_step --config=configs/duo_small.py --steps=5 --warmup=2 --repeats=5

Builds the real jitted, donating `make_train_step` twice in one process: Duo (masked dense
routing, random routes with p_big = 0.5) and dense (`model.duo=False`, only the big FFN), on
synthetic int32 batches of the config's shape. It times them interleaved so machine noise hits
both, and prints the median seconds per step of each, `flop_ratio = <x>` (from
`routing.FlopModel`) and, last, `duo_step/dense_step = <ratio>`. Target: the time ratio is within
0.03 of the FLOP ratio (masked dense should cost only the small FFN's extra FLOPs).
"""

import dataclasses
import statistics
import time

import flax.linen as nn
import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.train import mesh as mesh_lib
from adaptive_jax.train import state as state_lib
from adaptive_jax.train.config import RoutingConfig
from adaptive_jax.train.loop import typed_configs
from adaptive_jax.train.step import make_train_step

_CONFIG = config_flags.DEFINE_config_file("config", "configs/duo_small.py",
                                          "Experiment config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 5, "Train steps per timed run.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps of each model after compiling.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved timed runs of each model.")

TARGET_GAP = 0.03  # the time ratio should be within this of the FLOP ratio
_DUO_ROUTING = RoutingConfig(p_big=0.5)  # stage-1 random routing: both FFNs run every step


def flop_ratio(model_cfg: ModelConfig, seq_len: int) -> float:
  """Masked dense Duo train FLOPs over dense train FLOPs, per token.

  Duo computes both FFNs on every token: L * (attention + small + big); dense: L * (attention +
  big). Both add the tied logits' 2 * D * V; the backward pass (2x forward) cancels.
  """
  flops = routing.FlopModel.from_config(model_cfg, context=seq_len / 2)
  logits = 2.0 * model_cfg.d_model * model_cfg.vocab_size
  duo = flops.masked_dense_flops(model_cfg.num_layers) + logits
  dense = model_cfg.num_layers * (flops.attention() + flops.ffn(routing.Route.BIG)) + logits
  return duo / dense


def build_step(model_cfg, train_cfg, routing_cfg, mesh, batch_size, seq_len):
  """(step_fn, state, batch): the donating train step, a fresh state and a synthetic batch."""
  init_fn, abstract_state = state_lib.sharded_state_init(
      model_cfg, train_cfg, routing_cfg, mesh, seq_len)
  state_shardings = jax.tree.map(lambda x: x.sharding, abstract_state)
  step_fn = make_train_step(model_cfg, routing_cfg, jax.random.key(train_cfg.seed + 1),
                            state_shardings, mesh_lib.batch_sharding(mesh))
  rng = np.random.default_rng(train_cfg.seed)
  tokens_BxT = rng.integers(0, model_cfg.vocab_size, (batch_size, seq_len + 1), dtype=np.int32)
  batch = mesh_lib.global_batch(
      {"inputs": tokens_BxT[:, :-1], "targets": tokens_BxT[:, 1:]}, mesh)
  return step_fn, init_fn(), batch


def _run(step_fn, state, batch, num_steps):
  """Runs `num_steps` donating steps; returns (new state, seconds per step)."""
  tick = time.perf_counter()
  for _ in range(num_steps):
    state, _ = step_fn(state, batch)
  jax.block_until_ready(state)
  return state, (time.perf_counter() - tick) / num_steps


def time_interleaved(runs: dict, *, steps: int, warmup: int, repeats: int) -> dict:
  """Median seconds per step of each `runs[name] = (step_fn, state, batch)`, timed A B, B A, ..."""
  names = list(runs)
  states = {name: runs[name][1] for name in names}
  times = {name: [] for name in names}
  for name in names:  # compiles
    states[name], _ = _run(runs[name][0], states[name], runs[name][2], max(warmup, 1))
  for repeat in range(repeats):
    # Alternating the order cancels any drift that favours whichever runs first.
    for name in names if repeat % 2 == 0 else names[::-1]:
      states[name], seconds = _run(runs[name][0], states[name], runs[name][2], steps)
      times[name].append(seconds)
  return {name: statistics.median(times[name]) for name in names}


def main(argv):
  del argv
  model_cfg, data_cfg, _, train_cfg, _ = typed_configs(_CONFIG.value)
  model_cfg = dataclasses.replace(model_cfg, duo=True)
  dense_cfg = dataclasses.replace(model_cfg, duo=False)
  mesh = mesh_lib.make_mesh(train_cfg.mesh_shape)
  shape = (data_cfg.batch_size, data_cfg.seq_len)
  runs = {"duo": build_step(model_cfg, train_cfg, _DUO_ROUTING, mesh, *shape),
          "dense": build_step(dense_cfg, train_cfg, RoutingConfig(), mesh, *shape)}
  # Logical axis rules must be active while the steps are traced (on their first call).
  with jax.set_mesh(mesh), nn.logical_axis_rules(train_cfg.logical_axis_rules):
    seconds = time_interleaved(runs, steps=_STEPS.value, warmup=_WARMUP.value,
                               repeats=_REPEATS.value)
  flops = flop_ratio(model_cfg, data_cfg.seq_len)
  print(f"batch {shape[0]}x{shape[1]}, {model_cfg.num_layers} layers, D={model_cfg.d_model}, "
        f"F_big={model_cfg.d_ff_big}, F_small={model_cfg.d_ff_small}, "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s); median of "
        f"{_REPEATS.value} x {_STEPS.value} steps")
  print(f"duo_step = {seconds['duo'] * 1e3:.2f} ms")
  print(f"dense_step = {seconds['dense'] * 1e3:.2f} ms")
  print(f"flop_ratio = {flops:.4f}")
  print(f"target: duo_step/dense_step within {TARGET_GAP} of flop_ratio, i.e. <= "
        f"{flops + TARGET_GAP:.4f}")
  print(f"duo_step/dense_step = {seconds['duo'] / seconds['dense']:.4f}")


if __name__ == "__main__":
  app.run(main)
