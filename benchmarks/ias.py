r"""Adaptive sampling ratios recomputed from saved pools, and the on-device loop against a
per-question host loop doing the same draws.

  python -m benchmarks.ias --pools=docs/results/ias_quick/pools

Ratios: DIR holds the compact pools an IAS study saved (`<workdir>/pools`: validation.npz,
test.npz, control.npz and settings.json); `ias_sweep.evaluate` redoes every choice on
validation and every ratio on test from them, with its paired bootstrap 90% interval. The
lines are FLOPs of paper IAS (its setting and the selector chosen on validation: the learned
step verifier or the policy's likelihood, best-of-N or weighted vote) and of budget-aware online allocation over the fixed-N FLOPs at matched accuracy on
the regime's test questions, and of paper IAS on the uniform-mix control, each matched to
fixed N with the same selector; before them, every family (IAS, offline and online budget)
against the cheapest fixed method of any selector at its accuracy, and each headline method's
accuracy minus fixed N's at equal FLOPs with its interval (decisive where the fixed curve is
flat and the ratio at matched accuracy swings). Adaptive-Consistency,
DeepConf and probe IAS read token confidences, which the compact pools leave out, and beam
search draws its own samples: their ratios are in the study's results.json only. Without
--pools only the timing runs.

Timing: a random-init policy of the policy_small shape decodes with `draws.LiveDraw`, targets
1..16 samples for 8 questions, 4 per round. `adaptive.run` packs every active question's
draws into one decode of `rows` rows per round, inside one `lax.while_loop`;
`host_loop.run_host` draws question by question with the same jitted draw and the same keys
(the outputs are checked equal). Interleaved, median of --repeats. The last line is
`device_loop/python_loop = <ratio>` (target <= 0.5).
"""

import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.sampler import adaptive, decode, draws, host_loop
from adaptive_jax.sampler.adaptive import LoopConfig, StopRule
from adaptive_jax.studies import ias_study, ias_sweep
from adaptive_jax.tasks.answer_tokens import extract_answer_ids
from benchmarks.timing import time_interleaved

_POOLS = flags.DEFINE_string("pools", None, "A folder of compact pools (an IAS study's pools/).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved timed runs of each loop.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 48, "New tokens per sample at most.")

MODEL = ModelConfig(vocab_size=259, num_layers=4, d_model=128, num_heads=4, head_dim=32,
                    d_ff_big=512, d_ff_small=128, max_len=256, duo=False)
TARGETS = np.array([1, 2, 4, 8, 16, 3, 5, 7], np.int32)


def load_settings(folder: str) -> ias_sweep.SweepSettings:
  with open(os.path.join(folder, "settings.json")) as f:
    sweep = json.load(f)["sweep"]
  return ias_sweep.SweepSettings(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in sweep.items()})


def ratio_lines(folder: str) -> list[str]:
  """The regime, the chosen settings and the ratio lines, recomputed from the pools."""
  path = lambda name: os.path.join(folder, f"{name}.npz")
  for name in ("validation", "test"):
    if not os.path.exists(path(name)):
      raise FileNotFoundError(f"no {path(name)}: run python -m experiments.ias "
                              f"--config=configs/ias_small.py and pass its <workdir>/pools")
  with open(os.path.join(folder, "settings.json")) as f:
    chosen = json.load(f)["regime"]
  splits = {name: ias_study.load_split(path(name)) for name in ("validation", "test")}
  control = ias_study.load_split(path("control")) if os.path.exists(path("control")) else None
  start = time.perf_counter()
  results = ias_sweep.evaluate(splits["validation"], splits["test"], control,
                               load_settings(folder))
  seconds = time.perf_counter() - start
  from adaptive_jax.studies import regime  # the one-line description of the regime
  return [f"regime: {regime.describe(chosen)}",
          f"aggregation {results['aggregation']}; chosen on validation: {results['chosen']}",
          f"(recomputed from {folder} in {seconds:.1f} s; 90% paired bootstrap intervals)",
          "against the cheapest fixed method at the same accuracy (any selector but the rule "
          "verifier; majority vote included):",
          *ias_sweep.best_fixed_lines(results),
          "accuracy minus fixed N's (same selector) at equal FLOPs:",
          *ias_sweep.gain_lines(results),
          "against fixed N with the same selector:",
          *ias_sweep.headline_lines(results)]


def _score(params, tokens_BxT, prompt_len_B, length_B):
  del params, tokens_BxT, prompt_len_B
  return (length_B / 1000.0)[:, None]


def main(argv):
  del argv
  lines = ratio_lines(_POOLS.value) if _POOLS.value else []
  rng = np.random.default_rng(0)
  prompts = [[2] + rng.integers(3, 259, rng.integers(20, 60)).tolist() for _ in TARGETS]
  prompt_QxP, prompt_len_Q = decode.left_pad(prompts)
  params = nn.meta.unbox(Transformer(MODEL).init(jax.random.key(0), prompt_QxP[:1]))["params"]
  data = {"policy": params, "scorer": None, "key": jax.random.key(1), "score_cost": 1,
          "prompts": draws.Prompts(jnp.asarray(prompt_QxP), jnp.asarray(prompt_len_Q))}
  dec = decode.DecodeConfig(max_new_tokens=_MAX_NEW_TOKENS.value,
                            policy=decode.SamplingPolicy(1.0), stop_tokens=(2,))
  live = draws.LiveDraw(MODEL, dec, _score, extract_answer_ids, group_window=16)
  loop = LoopConfig(n_max=16, per_round=4, rows=32, num_channels=1)
  rule = StopRule()
  runs = {"device_loop": lambda: adaptive.run(live, data, TARGETS, rule=rule, loop=loop),
          "python_loop": lambda: host_loop.run_host(live, data, TARGETS, rule=rule, loop=loop)}
  device = jax.tree.map(np.asarray, runs["device_loop"]())
  host = runs["python_loop"]()
  for name in ("drawn_Q", "answers_QxN", "tokens_Q"):
    np.testing.assert_array_equal(getattr(device, name), host[name], err_msg=name)
  seconds = time_interleaved(runs, _REPEATS.value)
  print(f"{len(TARGETS)} questions, targets {TARGETS.tolist()}, 4 per round, {loop.rows} rows; "
        f"{int(device.tokens_Q.sum())} tokens; device {jax.devices()[0].device_kind}")
  for name, s in seconds.items():
    print(f"{name:>12}: {s:8.2f} s")
  for line in lines:
    print(line)
  print(f"device_loop/python_loop = {seconds['device_loop'] / seconds['python_loop']:.3f}")


if __name__ == "__main__":
  app.run(main)
