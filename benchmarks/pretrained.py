r"""SmolLM2-135M throughput: prefill and decode tokens/s at batch 1 and --batch, against a
measured matmul peak.

  python -m benchmarks.pretrained --prompt_len=32 --decode_steps=16 --batch=64 --repeats=3

The float32 model from the GGUF (`smollm2.load`) runs through the on-device sampler
(`sampler.decode`), greedy, no stop tokens, on random prompts of --prompt_len tokens (no
padding). Prefill is `decode.start` (the prompt through every layer into the KV cache, logits at
the last position, one token drawn); decode is --decode_steps calls of `decode.advance` under one
`lax.fori_loop`, from the prefilled state. The peak is a jitted --matmul_size square float32
matmul (default precision, as the model's). All are jitted, warmed up, timed interleaved with
block_until_ready, median of --repeats.

FLOPs are analytic (`nn.flops.decode_flops_per_token`, `prefill_flops_per_token`; a
multiply-add is 2): decode step t (1..S) attends to P + t keys; prefill token i to i + 1 keys,
and only the last position computes logits. The cache attention also reads the masked empty
slots, which the count leaves out.

Lines: the model, FLOPs per token, the matmul peak, then per run the time, tokens/s, FLOP/s
and its fraction of the peak. The last line is `decode_flops/matmul_peak = <r>`: decode FLOP/s
at --batch over the matmul peak, the MFU of batched decoding on whatever device runs it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from adaptive_jax.models import smollm2
from adaptive_jax.nn.flops import decode_flops_per_token, prefill_flops_per_token
from adaptive_jax.sampler import decode
from adaptive_jax.train.state import count_params
from benchmarks.timing import time_interleaved

_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 32, "P: prompt tokens per sequence.")
_DECODE_STEPS = flags.DEFINE_integer("decode_steps", 16, "S: decode steps timed after prefill.")
_BATCH = flags.DEFINE_integer("batch", 64, "The large batch (batch 1 is timed too); the last "
                              "line is its decode.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 4096, "Side of the square peak matmul.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved timed runs of each.")


@functools.partial(jax.jit, static_argnames=("cfg", "dec"))
def prefill(params, prompt_BxP, prompt_len_B, key_B, *, cfg, dec):
  return decode.start(cfg, dec, params, prompt_BxP, prompt_len_B, key_B)


@functools.partial(jax.jit, static_argnames=("cfg", "dec", "steps"))
def decode_steps(params, state, *, cfg, dec, steps):
  return jax.lax.fori_loop(0, steps, lambda _, s: decode.advance(cfg, dec, params, s), state)


@jax.jit
def matmul(a_NxN, b_NxN):
  return a_NxN @ b_NxN


def main(argv):
  del argv
  p, s, n = _PROMPT_LEN.value, _DECODE_STEPS.value, _MATMUL_SIZE.value
  model = smollm2.load()
  cfg, params = model.cfg, model.params
  dec = decode.DecodeConfig(max_new_tokens=s + 1, policy=decode.SamplingPolicy(temperature=0.0))
  rng = np.random.default_rng(0)
  runs, tokens, flops = {}, {}, {}
  for b in sorted({1, _BATCH.value}):
    prompt_BxP = jnp.asarray(rng.integers(3, cfg.vocab_size, (b, p)), jnp.int32)
    prompt_len_B = jnp.full(b, p, jnp.int32)
    key_B = jax.random.split(jax.random.key(0), b)
    state = prefill(params, prompt_BxP, prompt_len_B, key_B, cfg=cfg, dec=dec)
    runs[f"prefill batch {b}"] = functools.partial(prefill, params, prompt_BxP, prompt_len_B,
                                                   key_B, cfg=cfg, dec=dec)
    runs[f"decode batch {b}"] = functools.partial(decode_steps, params, state, cfg=cfg, dec=dec,
                                                  steps=s)
    tokens[f"prefill batch {b}"], tokens[f"decode batch {b}"] = b * p, b * s
    flops[f"prefill batch {b}"] = b * p * prefill_flops_per_token(cfg, p)
    flops[f"decode batch {b}"] = b * s * decode_flops_per_token(cfg, p, s)
  a_NxN = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  b_NxN = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
  runs["matmul"] = functools.partial(matmul, a_NxN, b_NxN)
  seconds = time_interleaved(runs, _REPEATS.value)
  peak = 2.0 * n**3 / seconds.pop("matmul")
  print(f"{smollm2.FILENAME} as float32: {cfg.num_layers} layers, D={cfg.d_model}, "
        f"{cfg.num_heads} query heads on {cfg.kv_heads} kv heads of {cfg.head_dim}, "
        f"F={cfg.d_ff_big}, V={cfg.vocab_size}, {count_params(params) / 1e6:.1f}M parameters; "
        f"device {jax.devices()[0].device_kind}, median of {_REPEATS.value}")
  print(f"analytic FLOPs/token: prefill {prefill_flops_per_token(cfg, p) / 1e6:.1f}M "
        f"(prompt {p}), decode {decode_flops_per_token(cfg, p, s) / 1e6:.1f}M "
        f"(mean context {p + (s + 1) / 2:g} over {s} steps)")
  print(f"matmul peak ({n}x{n} float32): {peak / 1e9:.1f} GFLOP/s")
  for name, t in seconds.items():
    rate = flops[name] / t
    print(f"{name:>17}: {t * 1e3:9.1f} ms  {tokens[name] / t:9.1f} tokens/s  "
          f"{rate / 1e9:8.2f} GFLOP/s  {rate / peak:.3f} of peak")
  large = f"decode batch {_BATCH.value}"
  print(f"decode_flops/matmul_peak = {flops[large] / seconds[large] / peak:.3f}")


if __name__ == "__main__":
  app.run(main)
