r"""The on-device sampler vs a host-driven per-token loop and vs a fixed-length scan.

  python -m benchmarks.sampler --questions=16 --samples=8 --max_new_tokens=64 --repeats=5

A random-init dense policy (4 layers, width 128, vocab 512) decodes questions x samples
left-padded prompts, timed in one process, interleaved, median of --repeats:
- while_loop: `decode.sample`, the whole decode in one `lax.while_loop` that exits when every
  sequence has stopped;
- python_loop: the same `start` / `advance` jitted separately, `advance` donating the cache,
  with a host stop check after every token (how HF-style `generate` works);
- scan: `advance` under a fixed-length `lax.scan`, stop tokens disabled, against while_loop
  with stop tokens disabled too, so nothing stops early: the cost of dynamic stopping.
- batch 1 (the latency regime), no stop tokens: while_loop against python_loop, where the
  per-token host dispatch shows, printed as `latency (batch 1): python_loop/while_loop = <r>`.
The last two lines are `python_loop/while_loop = <ratio>` (target >= 2) and
`while_loop/scan = <ratio>` (target <= 1.1), ratios of median times.
"""

import functools

import flax.linen as nn
import jax
import numpy as np
from absl import app, flags

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.sampler import decode
from benchmarks.timing import time_interleaved

_QUESTIONS = flags.DEFINE_integer("questions", 16, "Distinct prompts.")
_SAMPLES = flags.DEFINE_integer("samples", 8, "Samples per prompt.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64, "New tokens per sample at most.")
_NUM_STOP_TOKENS = flags.DEFINE_integer(
    "num_stop_tokens", 48, "Token ids 0..n-1 stop a sequence (a random policy draws one about "
    "every vocab/n tokens, so sequences end at different steps).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved timed runs of each decoder.")

MODEL = ModelConfig(vocab_size=512, num_layers=4, d_model=128, num_heads=4, head_dim=32,
                    d_ff_big=512, d_ff_small=128, max_len=128, duo=False)


def python_loop_sampler(cfg: ModelConfig, dec: decode.DecodeConfig):
  """A per-token host loop over a jitted, cache-donating step, with a host stop check."""
  start = jax.jit(decode.start, static_argnums=(0, 1))
  advance = jax.jit(decode.advance, static_argnums=(0, 1), donate_argnums=3)

  def run(params, prompt_BxP, prompt_len_B, key_B):
    state = start(cfg, dec, params, prompt_BxP, prompt_len_B, key_B)
    for _ in range(dec.max_new_tokens - 1):
      if np.asarray(state.done_B).all():  # one device-to-host copy per token
        break
      state = advance(cfg, dec, params, state)
    return decode.output(state)
  return run


@functools.partial(jax.jit, static_argnames=("cfg", "dec"))
def scan_sample(params, prompt_BxP, prompt_len_B, key_B, *, cfg, dec) -> decode.SampleOutput:
  """Always max_new_tokens steps: `advance` under `lax.scan`, no stop check."""
  state = decode.start(cfg, dec, params, prompt_BxP, prompt_len_B, key_B)
  state, _ = jax.lax.scan(lambda s, _: (decode.advance(cfg, dec, params, s), None), state,
                          length=dec.max_new_tokens - 1)
  return decode.output(state)


def main(argv):
  del argv
  cfg, m = MODEL, _MAX_NEW_TOKENS.value
  rng = np.random.default_rng(0)
  prompts = [rng.integers(_NUM_STOP_TOKENS.value, cfg.vocab_size, rng.integers(16, 49)).tolist()
             for _ in range(_QUESTIONS.value)]
  prompt_QxP, prompt_len_Q = decode.left_pad(prompts)
  args = (nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), prompt_QxP[:1]))["params"],
          np.repeat(prompt_QxP, _SAMPLES.value, 0), np.repeat(prompt_len_Q, _SAMPLES.value),
          jax.random.split(jax.random.key(1), _QUESTIONS.value * _SAMPLES.value))
  policy = decode.SamplingPolicy(temperature=1.0, top_p=0.95)
  stopping = decode.DecodeConfig(m, policy, stop_tokens=tuple(range(_NUM_STOP_TOKENS.value)))
  no_stop = decode.DecodeConfig(m, policy)
  # The latency regime: one sequence, no stop tokens, so both decode all m tokens and the
  # per-token host dispatch is what differs.
  one = (args[0], args[1][:1], args[2][:1], args[3][:1])
  runs = {
      "while_loop_batch1": lambda: decode.sample(*one, cfg=cfg, dec=no_stop),
      "python_loop_batch1": functools.partial(python_loop_sampler(cfg, no_stop), *one),
      "while_loop": lambda: decode.sample(*args, cfg=cfg, dec=stopping),
      "python_loop": functools.partial(python_loop_sampler(cfg, stopping), *args),
      "while_loop_no_stop": lambda: decode.sample(*args, cfg=cfg, dec=no_stop),
      "scan_no_stop": lambda: scan_sample(*args, cfg=cfg, dec=no_stop),
  }
  outputs = {name: jax.tree.map(np.asarray, run()) for name, run in runs.items()}
  for a, b in (("while_loop", "python_loop"), ("while_loop_no_stop", "scan_no_stop"),
               ("while_loop_batch1", "python_loop_batch1")):
    for x, y in zip(outputs[a], outputs[b]):
      np.testing.assert_array_equal(x, y, err_msg=f"{a} and {b} sampled differently")
  lengths_B = outputs["while_loop"].lengths_B
  print(f"batch {len(lengths_B)} = {_QUESTIONS.value} questions x {_SAMPLES.value} samples, "
        f"prompts {prompt_QxP.shape[1]} tokens (left-padded), up to {m} new; with stop tokens: "
        f"lengths mean {lengths_B.mean():.1f}, min {lengths_B.min()}, max {lengths_B.max()}; "
        f"device {jax.devices()[0].device_kind}")
  seconds = time_interleaved(runs, _REPEATS.value)
  for name, s in seconds.items():
    tokens = int(outputs[name].lengths_B.sum())
    print(f"{name:>20}: {s * 1e3:8.1f} ms  {tokens / s:10.0f} tokens/s  ({tokens} tokens)")
  print(f"latency (batch 1): python_loop/while_loop = "
        f"{seconds['python_loop_batch1'] / seconds['while_loop_batch1']:.3f}")
  print(f"python_loop/while_loop = {seconds['python_loop'] / seconds['while_loop']:.3f}")
  print(f"while_loop/scan = {seconds['while_loop_no_stop'] / seconds['scan_no_stop']:.3f}")


if __name__ == "__main__":
  app.run(main)
