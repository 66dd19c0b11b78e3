r"""Prefix-shared oracles vs their unshared references: measured time ratios vs FLOP ratios.

  python -m benchmarks.oracle --config=configs/duo_small.py --repeats=3

On a random-init model of the config's shape (duo_small: L=12, D=128, F 512/32, V=2048;
routing costs do not depend on training), all in one process, compile excluded, timed
interleaved (A B, B A, ...) with medians:

1. Pattern oracle: `pattern_loss_matrix` (prefix tree, all 2^L patterns in one call) vs a loop
   calling one jitted full-model forward per pattern, its constant route_BxTxL as input. The
   loop is timed on a random subset of `--loop_patterns` patterns and its time scaled to 2^L
   (printed as scaled); both must give the same losses on the subset (within 1e-4).
2. Sequential oracle: `sequential_oracle` (a prefix tree per token) vs
   `naive_sequential_oracle` (every path on its own), budgets side by side, on a shorter
   sequence; both must choose the same routes with the same losses.

Prints the patterns and tokens measured, the seconds of each, `flop_ratio_pattern = <x>`
(`pattern_flops`) and `flop_ratio_tree = <x>` (the node counts `_search` computes, padded
over the side-by-side budgets, priced by `routing.FlopModel`; logits included in both), the
target line, and last `pattern_oracle/loop = <ratio>` and `tree_oracle/naive = <ratio>`.
Target: each time ratio <= 1.3 x its FLOP ratio, so the sharing is real, not just batching.
About 3 minutes on 2 CPU cores.
"""

import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from adaptive_jax import oracle, routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.oracle import sequential
from adaptive_jax.routing import Route
from adaptive_jax.train.loop import typed_configs
from adaptive_jax.train.step import cross_entropy

_CONFIG = config_flags.DEFINE_config_file("config", "configs/duo_small.py",
                                          "Experiment config file (its model is used).",
                                          lock_config=True)
_BATCH = flags.DEFINE_integer("batch_size", 1, "Sequences for the pattern oracle.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 64, "Tokens per sequence for the pattern oracle.")
_LOOP_PATTERNS = flags.DEFINE_integer("loop_patterns", 64,
                                      "Random patterns timed in the per-pattern loop.")
_SEQ_BATCH = flags.DEFINE_integer("seq_batch_size", 1, "Sequences for the sequential oracle.")
_SEQ_TOKENS = flags.DEFINE_integer("seq_tokens", 16, "Tokens per sequence, sequential oracle.")
_BUDGETS = flags.DEFINE_list("budgets", ["4", "6", "8"], "Sequential oracle budgets (big layers).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved timed runs of each implementation.")
_SEED = flags.DEFINE_integer("seed", 0, "Init, tokens and the loop's pattern subset.")

TARGET_FACTOR = 1.3  # each time ratio should be <= this times its FLOP ratio
TOLERANCE = 1e-4  # largest loss difference between a shared and an unshared implementation


def random_model(cfg: ModelConfig, batch: int, seq_len: int, seed: int):
  """(params, tokens_BxT, targets_BxT): random init and uniformly random tokens."""
  tokens_BxTp1 = jax.random.randint(jax.random.key(seed + 1), (batch, seq_len + 1), 0,
                                    cfg.vocab_size)
  params = nn.meta.unbox(Transformer(cfg).init(
      jax.random.key(seed), tokens_BxTp1[:, :-1],
      route_BxTxL=jnp.ones((batch, seq_len, cfg.num_layers), jnp.int32)))["params"]
  return params, tokens_BxTp1[:, :-1], tokens_BxTp1[:, 1:]


def sequential_flops(flops: routing.FlopModel, cfg: ModelConfig, budgets, *, share: bool,
                     padded: bool = True) -> float:
  """Forward FLOPs per sequence token of the sequential oracle over `budgets`, logits included.

  padded: the node tables `_search` runs, each depth padded to the largest over the budgets
  (what is computed); else the sum of each budget's own counts (`evaluation_counts`).
  """
  L, logits = cfg.num_layers, 2.0 * cfg.d_model * cfg.vocab_size

  def cost(num_start, small_C, big_C):  # child counts per layer, by route
    nodes = [num_start] + [s + b for s, b in zip(small_C, big_C)]
    return (sum(nodes[:-1]) * flops.attention() + sum(small_C) * flops.ffn(Route.SMALL)
            + sum(big_C) * flops.ffn(Route.BIG) + nodes[-1] * logits)

  if padded:
    plan = sequential._plan(L, tuple(budgets), share)
    return len(budgets) * cost(plan.num_start, [p.shape[1] for p in plan.small_parent],
                               [p.shape[1] for p in plan.big_parent])
  total = 0.0
  for k in budgets:
    num_start, layers = sequential._nodes(L, k, share)
    small_C, big_C = [len(s) for s, _ in layers], [len(b) for _, b in layers]
    counts = sequential.evaluation_counts(L, k, share=share)
    assert counts == {"attention": num_start + sum(small_C[:-1]) + sum(big_C[:-1]),
                      "ffn": sum(small_C) + sum(big_C),
                      "logits": small_C[-1] + big_C[-1]}, (counts, k, share)
    total += cost(num_start, small_C, big_C)
  return total


def time_interleaved(runs: dict, *, repeats: int) -> tuple[dict, dict]:
  """(median seconds, first outputs) of each zero-argument `runs[name]`; the first call of
  each (compiling) is untimed, then they run A B, B A, ... so drift hits both."""
  names = list(runs)
  outputs = {name: jax.block_until_ready(runs[name]()) for name in names}
  times = {name: [] for name in names}
  for repeat in range(repeats):
    for name in names if repeat % 2 == 0 else names[::-1]:
      tick = time.perf_counter()
      jax.block_until_ready(runs[name]())
      times[name].append(time.perf_counter() - tick)
  return {name: statistics.median(times[name]) for name in names}, outputs


def pattern_benchmark(cfg: ModelConfig, batch: int, seq_len: int, num_loop: int, repeats: int,
                      seed: int) -> dict:
  """Times the prefix-tree loss matrix (all patterns) against per-pattern jitted forwards."""
  params, tokens_BxT, targets_BxT = random_model(cfg, batch, seq_len, seed)
  routes_PxL = oracle.pattern_routes(cfg.num_layers)
  subset = np.sort(np.random.default_rng(seed).choice(len(routes_PxL), num_loop, replace=False))
  route_inputs = [jnp.broadcast_to(jnp.asarray(r), (batch, seq_len, cfg.num_layers))
                  for r in routes_PxL[subset]]

  @jax.jit
  def forward(params, tokens_BxT, targets_BxT, route_BxTxL):
    logits = Transformer(cfg).apply({"params": params}, tokens_BxT, route_BxTxL=route_BxTxL)
    return cross_entropy(logits, targets_BxT)

  runs = {"tree": lambda: oracle.pattern_loss_matrix(params, cfg, tokens_BxT, targets_BxT),
          "loop": lambda: [forward(params, tokens_BxT, targets_BxT, r) for r in route_inputs]}
  seconds, outputs = time_interleaved(runs, repeats=repeats)
  diff = float(np.abs(np.asarray(outputs["tree"])[subset] - np.stack(outputs["loop"])).max())
  assert diff <= TOLERANCE, f"pattern tree and loop losses differ by {diff}"
  return {"tree_s": seconds["tree"], "loop_s_measured": seconds["loop"],
          "loop_s_scaled": seconds["loop"] * len(routes_PxL) / num_loop,
          "num_patterns": len(routes_PxL), "num_loop": num_loop, "max_abs_diff": diff}


def sequential_benchmark(cfg: ModelConfig, batch: int, seq_len: int, budgets, repeats: int,
                         seed: int) -> dict:
  """Times the per-token prefix tree against per-path evaluation, all budgets side by side."""
  params, tokens_BxT, targets_BxT = random_model(cfg, batch, seq_len, seed)
  runs = {name: (lambda fn=fn: fn(params, cfg, tokens_BxT, targets_BxT, budgets))
          for name, fn in (("tree", sequential.sequential_oracle),
                           ("naive", sequential.naive_sequential_oracle))}
  seconds, outputs = time_interleaved(runs, repeats=repeats)
  (tree_route, tree_loss), (naive_route, naive_loss) = (
      map(np.asarray, outputs[name]) for name in ("tree", "naive"))
  same_routes = float((tree_route == naive_route).all(-1).mean())
  diff = float(np.abs(tree_loss - naive_loss).max())
  assert same_routes == 1.0 and diff <= TOLERANCE, (
      f"tree and naive sequential oracles differ: {same_routes:.1%} of routes equal, "
      f"losses differ by up to {diff}")
  return {"tree_s": seconds["tree"], "naive_s": seconds["naive"], "max_abs_diff": diff}


def main(argv):
  del argv
  cfg = typed_configs(_CONFIG.value)[0]
  L, budgets = cfg.num_layers, tuple(int(k) for k in _BUDGETS.value)
  batch, seq_len, seq_batch, seq_tokens = (_BATCH.value, _SEQ_LEN.value, _SEQ_BATCH.value,
                                           _SEQ_TOKENS.value)
  print(f"random-init model: {L} layers, D={cfg.d_model}, F_big={cfg.d_ff_big}, "
        f"F_small={cfg.d_ff_small}, V={cfg.vocab_size}, {cfg.dtype}; "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s); compile excluded, median "
        f"of {_REPEATS.value} interleaved runs", flush=True)

  pat = pattern_benchmark(cfg, batch, seq_len, _LOOP_PATTERNS.value, _REPEATS.value, _SEED.value)
  print(f"pattern oracle: {pat['num_patterns']} patterns x {batch}x{seq_len} tokens; loop timed "
        f"on {pat['num_loop']} random patterns, scaled to {pat['num_patterns']}; losses agree "
        f"within {pat['max_abs_diff']:.1e}")
  print(f"pattern_oracle = {pat['tree_s']:.3f} s (all {pat['num_patterns']} patterns)")
  print(f"loop = {pat['loop_s_scaled']:.3f} s (scaled: {pat['loop_s_measured']:.3f} s for "
        f"{pat['num_loop']} patterns)", flush=True)

  seq = sequential_benchmark(cfg, seq_batch, seq_tokens, budgets, _REPEATS.value, _SEED.value)
  print(f"sequential oracle: budgets {budgets} side by side x {seq_batch}x{seq_tokens} tokens; "
        f"same routes, losses agree within {seq['max_abs_diff']:.1e}")
  print(f"tree_oracle = {seq['tree_s']:.3f} s")
  print(f"naive = {seq['naive_s']:.3f} s")

  # Both implementations compute attention scores over all T keys (masked), so context = T.
  shared, naive = oracle.pattern_flops(
      routing.FlopModel.from_config(cfg, context=seq_len), L,
      cfg.vocab_size)
  seq_flops = routing.FlopModel.from_config(cfg, context=seq_tokens)
  ratio = lambda padded: (sequential_flops(seq_flops, cfg, budgets, share=True, padded=padded)
                          / sequential_flops(seq_flops, cfg, budgets, share=False, padded=padded))
  flop_pattern, flop_tree = shared / naive, ratio(True)
  print(f"flop_ratio_tree_unpadded = {ratio(False):.4f} (per budget, without the side-by-side "
        f"padding)")
  print(f"flop_ratio_pattern = {flop_pattern:.4f}")
  print(f"flop_ratio_tree = {flop_tree:.4f}")
  time_pattern, time_tree = pat["tree_s"] / pat["loop_s_scaled"], seq["tree_s"] / seq["naive_s"]
  met = lambda t, f: "met" if t <= TARGET_FACTOR * f else "NOT met"
  print(f"target: pattern_oracle/loop <= {TARGET_FACTOR} x flop_ratio_pattern = "
        f"{TARGET_FACTOR * flop_pattern:.4f} ({met(time_pattern, flop_pattern)}); "
        f"tree_oracle/naive <= {TARGET_FACTOR} x flop_ratio_tree = "
        f"{TARGET_FACTOR * flop_tree:.4f} ({met(time_tree, flop_tree)})")
  print(f"pattern_oracle/loop = {time_pattern:.4f}")
  print(f"tree_oracle/naive = {time_tree:.4f}")


if __name__ == "__main__":
  app.run(main)
