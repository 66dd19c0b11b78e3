r"""IAS compute at matched accuracy (from an IAS study), and the on-device loop against a
per-question host loop doing the same draws.

  python -m benchmarks.ias --workdir=workdir/ias_small

Ratios read from DIR/results.json (test split; `experiments.ias` writes it): FLOPs of IAS
best-of-N with the calibrated PRM's 0.1 quantile, of the better of IAS-of-K / IAS-of-M beam
search, and of the best realizable adaptive method (the per-difficulty oracle excluded), each
over the fixed method's FLOPs at the same accuracy. Without --workdir only the timing runs.

Timing: a random-init policy of the policy_small shape decodes with `draws.LiveDraw`, targets
1..16 samples for 8 questions, 4 per round. `adaptive.run` packs every active question's
draws into one decode of `rows` rows per round, inside one `lax.while_loop`;
`host_loop.run_host` draws question by question with the same jitted draw and the same keys
(the outputs are checked equal). Interleaved, median of --repeats. The last line is
`device_loop/python_loop = <ratio>` (target <= 0.5).
"""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.sampler import adaptive, decode, draws, host_loop
from adaptive_jax.sampler.adaptive import LoopConfig, StopRule
from adaptive_jax.tasks.answer_tokens import extract_answer_ids
from benchmarks.timing import time_interleaved

_WORKDIR = flags.DEFINE_string("workdir", None, "An experiments.ias workdir (results.json).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved timed runs of each loop.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 48, "New tokens per sample at most.")

MODEL = ModelConfig(vocab_size=259, num_layers=4, d_model=128, num_heads=4, head_dim=32,
                    d_ff_big=512, d_ff_small=128, max_len=256, duo=False)
TARGETS = np.array([1, 2, 4, 8, 16, 3, 5, 7], np.int32)


def _ratio_lines(workdir: str) -> list[str]:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no {path}: run python -m experiments.ias "
                            f"--config=configs/ias_small.py --workdir={workdir}")
  with open(path) as f:
    results = json.load(f)
  ratio = lambda m: (m["matched"]["ratio"] if not m["matched"]["not_reached"] else float("nan"))
  methods = results["test"]["methods"]
  beams = results["beam"]["variants"]
  adaptive_ratios = {name: ratio(m) for name, m in {**methods, **{
      f"beam_{k}": v for k, v in beams.items() if k.startswith("ias")}}.items()
                     if "oracle" not in name}
  best = min(adaptive_ratios, key=lambda k: np.inf if np.isnan(adaptive_ratios[k])
             else adaptive_ratios[k])
  beam_name = min(("ias_of_k", "ias_of_m"), key=lambda k: np.nan_to_num(ratio(beams[k]),
                                                                         nan=np.inf))
  return [f"(best-of-N: ias_calibrated_q0.1 against {methods['ias_calibrated_q0.1']['matched_to']};"
          f" beam: {beam_name}; best adaptive: {best}; nan = accuracy above the fixed curve)",
          f"ias_bon_flops/fixed_bon_flops_at_matched_accuracy = "
          f"{ratio(methods['ias_calibrated_q0.1']):.3f}",
          f"ias_beam_flops/fixed_beam_flops_at_matched_accuracy = {ratio(beams[beam_name]):.3f}",
          f"best_adaptive_flops/fixed_flops_at_matched_accuracy = {adaptive_ratios[best]:.3f}"]


def _score(params, tokens_BxT, prompt_len_B, length_B):
  del params, tokens_BxT, prompt_len_B
  return (length_B / 1000.0)[:, None]


def main(argv):
  del argv
  lines = _ratio_lines(_WORKDIR.value) if _WORKDIR.value else []
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
