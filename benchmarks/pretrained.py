r"""SmolLM2-135M throughput: prefill and decode tokens/s, against a measured matmul peak, the
machine's memory bandwidth, and llama.cpp on the same GGUF file.

  python -m benchmarks.pretrained --prompt_len=32 --decode_steps=64 --batch=64 --repeats=3
  pip install -e ".[anchors]"   # llama-cpp-python, built from source: the llama.cpp lines

Ours: the model from the GGUF (`smollm2.load`, dequantized to float32), held as each of
--weights (`quantize.convert_weights`: float32; bfloat16 params and activations; weight-only
int8 with float32 activations, multiplied by XLA after dequantizing and, as "int8
cpu-matvec", by the int8 kernels of nn/int8_matvec.py), through the on-device sampler (`sampler.decode`), greedy, no
stop tokens, on random prompts of --prompt_len tokens. Prefill is `decode.start` (the prompt
through every layer into the KV cache, one token drawn); decode is --decode_steps calls of
`decode.advance` under one `lax.fori_loop`, from the prefilled state, the layer stack split
before the loop as `decode.sample` splits it (`transformer.unstack_layers`). Batch 1 runs every
--weights; --batch runs float32.

llama.cpp (llama-cpp-python, if installed): the same GGUF file (its own Q4_1 kernels), the same
prompt tokens and step count, greedy (argmax of its logits), `n_threads` = the cores JAX's CPU
client uses; prefill is `eval(prompt)`, decode --decode_steps `eval([token])` calls after it.

The peak is a jitted --matmul_size square float32 matmul; the memory bandwidth a jitted sum
over a --bandwidth_mib float32 array (bytes read per second: decode at batch 1 reads every
weight once per token). All runs, ours and llama.cpp's, are warmed up and timed interleaved,
median of --repeats.

FLOPs are analytic (`nn.flops`; a multiply-add is 2). Bytes per decode token at batch 1 are
the params' bytes (all of them: the tied embedding is also the output projection) plus the KV
cache's (attention reads every slot, the empty ones too).

Last lines:
  decode_bytes_per_s/memory_bandwidth = r   # ours, batch 1, the --weights nearest the limit
  ours_decode/llamacpp_decode = r           # tokens/s at batch 1, same GGUF, same threads
  decode_flops/matmul_peak = r              # ours, --batch, float32
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from adaptive_jax.models import smollm2
from adaptive_jax.nn import quantize
from adaptive_jax.nn.flops import decode_flops_per_token, prefill_flops_per_token
from adaptive_jax.nn.transformer import unstack_layers
from adaptive_jax.sampler import decode
from adaptive_jax.train.state import count_params
from benchmarks.timing import time_interleaved

_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 32, "P: prompt tokens per sequence.")
_DECODE_STEPS = flags.DEFINE_integer("decode_steps", 64, "S: decode steps timed after prefill.")
_BATCH = flags.DEFINE_integer("batch", 64, "The large batch (batch 1 is timed too); the last "
                              "line is its decode.")
_WEIGHTS = flags.DEFINE_list("weights", list(quantize.WEIGHT_FORMATS),
                             f"Weight formats decoded at batch 1, of {quantize.WEIGHT_FORMATS}.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 4096, "Side of the square peak matmul.")
_BANDWIDTH_MIB = flags.DEFINE_integer("bandwidth_mib", 1024, "Size of the array summed for "
                                      "the memory bandwidth.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved timed runs of each.")


@functools.partial(jax.jit, static_argnames=("cfg", "dec"))
def prefill(params, prompt_BxP, prompt_len_B, key_B, *, cfg, dec):
  return decode.start(cfg, dec, params, prompt_BxP, prompt_len_B, key_B)


@functools.partial(jax.jit, static_argnames=("cfg", "dec", "steps"))
def decode_steps(params, state, *, cfg, dec, steps):
  params = unstack_layers(params)  # as decode.sample does: once, before the loop
  return jax.lax.fori_loop(0, steps, lambda _, s: decode.advance(cfg, dec, params, s), state)


@jax.jit
def matmul(a_NxN, b_NxN):
  return a_NxN @ b_NxN


@jax.jit
def read_all(x):
  return jnp.sum(x)


def nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


class LlamaCpp:
  """Greedy prefill and decode of a GGUF file with llama.cpp, on given token ids."""

  def __init__(self, path, prompt, steps: int, threads: int):
    import llama_cpp  # the [anchors] extra
    self.api = llama_cpp
    self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(prompt) + steps + 8,
                               n_batch=len(prompt), n_threads=threads,
                               n_threads_batch=threads, verbose=False)
    self.prompt, self.steps = list(prompt), steps
    self.prefill()

  def _next(self) -> int:
    """Argmax of the last evaluated position's logits (read where llama.cpp keeps them)."""
    logits = np.ctypeslib.as_array(self.api.llama_get_logits_ith(self.llm.ctx, -1),
                                   shape=(self.llm.n_vocab(),))
    return int(np.argmax(logits))

  def prefill(self) -> int:
    self.llm.reset()
    self.llm.eval(self.prompt)
    return self._next()

  def decode(self) -> list[int]:
    """`steps` greedy tokens after the prompt (its cache kept; what followed is dropped)."""
    self.llm.n_tokens = len(self.prompt)
    tokens = [self._next()]
    for _ in range(self.steps):
      self.llm.eval([tokens[-1]])
      tokens.append(self._next())
    return tokens


def llamacpp_or_reason(path, prompt, steps, threads):
  try:
    return LlamaCpp(path, prompt, steps, threads), ""
  except ImportError:
    return None, 'llama-cpp-python is not installed (pip install -e ".[anchors]")'


def main(argv):
  del argv
  p, s, n, batch = _PROMPT_LEN.value, _DECODE_STEPS.value, _MATMUL_SIZE.value, _BATCH.value
  for w in _WEIGHTS.value:
    if w not in quantize.WEIGHT_FORMATS:
      raise app.UsageError(f"--weights entries must be in {quantize.WEIGHT_FORMATS}, got {w!r}")
  if "float32" not in _WEIGHTS.value:
    raise app.UsageError("--weights must include float32 (the --batch runs and the matmul "
                         f"peak are float32), got {_WEIGHTS.value}")
  model = smollm2.load()
  rng = np.random.default_rng(0)
  prompts = {b: rng.integers(3, model.cfg.vocab_size, (b, p)) for b in sorted({1, batch})}
  runs, tokens, flops, decode_bytes = {}, {}, {}, {}
  formats = {}  # label -> (cfg, params): int8 twice, multiplied by XLA and by the int8 kernels
  for weights in _WEIGHTS.value:
    cfg, params = quantize.convert_weights(model.cfg, model.params, weights, "--weights")
    formats[weights] = cfg, params
    if weights == "int8":
      formats["int8 cpu-matvec"] = dataclasses.replace(cfg, int8_matvec="cpu"), params
  for label, (cfg, params) in formats.items():
    dec = decode.DecodeConfig(max_new_tokens=s + 1,
                              policy=decode.SamplingPolicy(temperature=0.0))
    for b in sorted({1, batch}) if label == "float32" else [1]:
      prompt_BxP = jnp.asarray(prompts[b], jnp.int32)
      prompt_len_B = jnp.full(b, p, jnp.int32)
      key_B = jax.random.split(jax.random.key(0), b)
      state = prefill(params, prompt_BxP, prompt_len_B, key_B, cfg=cfg, dec=dec)
      name = f"{label} batch {b}"
      runs[f"prefill {name}"] = functools.partial(prefill, params, prompt_BxP, prompt_len_B,
                                                  key_B, cfg=cfg, dec=dec)
      runs[f"decode {name}"] = functools.partial(decode_steps, params, state, cfg=cfg, dec=dec,
                                                 steps=s)
      tokens[f"prefill {name}"], tokens[f"decode {name}"] = b * p, b * s
      flops[f"prefill {name}"] = b * p * prefill_flops_per_token(cfg, p)
      flops[f"decode {name}"] = b * s * decode_flops_per_token(cfg, p, s)
      if b == 1:
        decode_bytes[f"decode {name}"] = (nbytes(params), nbytes(state.cache))
  threads = os.cpu_count() if jax.default_backend() == "cpu" else 1
  llamacpp, reason = llamacpp_or_reason(smollm2.gguf_path(), prompts[1][0].tolist(), s, threads)
  if llamacpp is not None:
    runs["prefill llama.cpp batch 1"], runs["decode llama.cpp batch 1"] = (llamacpp.prefill,
                                                                          llamacpp.decode)
    tokens["prefill llama.cpp batch 1"], tokens["decode llama.cpp batch 1"] = p, s
  a_NxN = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  b_NxN = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
  big = jnp.ones(_BANDWIDTH_MIB.value * 2**20 // 4, jnp.float32)
  runs["matmul"], runs["read"] = functools.partial(matmul, a_NxN, b_NxN), functools.partial(
      read_all, big)
  seconds = time_interleaved(runs, _REPEATS.value)
  peak = 2.0 * n**3 / seconds.pop("matmul")
  bandwidth = big.nbytes / seconds.pop("read")

  cfg = model.cfg
  print(f"{smollm2.FILENAME}: {cfg.num_layers} layers, D={cfg.d_model}, {cfg.num_heads} query "
        f"heads on {cfg.kv_heads} kv heads of {cfg.head_dim}, F={cfg.d_ff_big}, "
        f"V={cfg.vocab_size}, {count_params(model.params) / 1e6:.1f}M parameters; device "
        f"{jax.devices()[0].device_kind}, {threads} threads, median of {_REPEATS.value}")
  print(f"analytic FLOPs/token: prefill {prefill_flops_per_token(cfg, p) / 1e6:.1f}M "
        f"(prompt {p}), decode {decode_flops_per_token(cfg, p, s) / 1e6:.1f}M "
        f"(mean context {p + (s + 1) / 2:g} over {s} steps)")
  print(f"matmul peak ({n}x{n} float32): {peak / 1e9:.1f} GFLOP/s; memory bandwidth (sum over "
        f"{_BANDWIDTH_MIB.value} MiB): {bandwidth / 1e9:.1f} GB/s")
  for name, t in seconds.items():
    line = f"{name:>27}: {t * 1e3:9.1f} ms  {tokens[name] / t:9.1f} tokens/s"
    if name in flops:
      rate = flops[name] / t
      line += f"  {rate / 1e9:8.2f} GFLOP/s  {rate / peak:.3f} of peak"
    if name in decode_bytes:
      weight_bytes, cache_bytes = decode_bytes[name]
      rate = (weight_bytes + cache_bytes) * tokens[name] / t
      line += (f"  {(weight_bytes + cache_bytes) / 1e6:6.1f} MB/token (cache "
               f"{cache_bytes / 1e6:.1f})  {rate / 1e9:5.1f} GB/s  {rate / bandwidth:.3f} of "
               f"bandwidth")
    print(line)
  rate = lambda name: tokens[name] / seconds[name]
  fraction = {w: sum(decode_bytes[f"decode {w} batch 1"]) * rate(f"decode {w} batch 1")
              / bandwidth for w in formats}
  nearest = max(fraction, key=fraction.get)
  fastest = max(formats, key=lambda w: rate(f"decode {w} batch 1"))
  print(f"batch-1 decode: nearest the memory limit {nearest}, fastest {fastest}")
  print(f"decode_bytes_per_s/memory_bandwidth = {fraction[nearest]:.3f}")
  if llamacpp is None:
    print(f"ours_decode/llamacpp_decode = not measured: {reason}")
  else:
    print(f"ours_decode/llamacpp_decode = "
          f"{rate(f'decode {fastest} batch 1') / rate('decode llama.cpp batch 1'):.3f}")
  large = f"decode float32 batch {batch}"
  print(f"decode_flops/matmul_peak = {flops[large] / seconds[large] / peak:.3f}")


if __name__ == "__main__":
  app.run(main)
