"""Weight-only int8: kernels stored as int8 with one float32 scale per output channel.

Batch-1 decode reads every weight once per token, so it runs at the speed weights stream from
memory: int8 reads a quarter of float32's bytes. Symmetric, per output channel: for a kernel
W and its output channel c, scale_c = max |W[..., c]| / 127 over the input axes and
q = round(W / scale_c) in [-127, 127]; the model computes with q * scale in the activation
dtype. (GGUF's Q8_0 keeps one scale per block of 32 weights; one per channel is the
weight-only int8 of AQT and of gemma's int8 checkpoints: the scale multiplies the matmul's
output, and the error per weight is at most scale / 2.)

`ModelConfig.weight_quant = "int8"` gives the model int8 params (`kernel`, `Int8Embed`);
`quantize_params` turns a float params tree into them. Norms, biases and routers stay in
their float dtype. Under `ModelConfig.int8_matvec = "cpu"` a kernel stays an `Int8Kernel`
(int8 values and scale, apart) and `project` multiplies it: through the int8 custom calls of
nn/int8_matvec.py for products of at most INT8_MATVEC_ROWS rows, dequantized above that.
"""

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# The input axes of each kernel (unstacked), reduced for its per-output-channel scale. The
# token embedding [V, D] is also the tied output projection, whose output channel is the
# vocabulary row: one scale per row.
INPUT_AXES = {"query": (0,), "key": (0,), "value": (0,), "out": (0, 1), "gate": (0,),
              "up": (0,), "down": (0,), "unembed": (0,), "embedding": (1,)}
SCALE = "_scale"


def quantize_int8(w, input_axes: tuple[int, ...]):
  """(q int8, scale float32 with the input axes kept as 1) with w ~= q * scale."""
  w = np.asarray(w, np.float32)
  scale = np.abs(w).max(axis=input_axes, keepdims=True) / 127.0
  scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero channel stays 0
  q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
  return q, scale


def dequantize(q, scale, dtype):
  return q.astype(dtype) * scale.astype(dtype)


# Products with at most this many rows (batch x new tokens) go through the int8 custom calls:
# decode steps; prefill and training-sized batches are compute-bound, where XLA's dot wins.
INT8_MATVEC_ROWS = 16


class Int8Kernel(NamedTuple):
  """An int8 kernel and its float32 scale (the input axes kept as 1), not yet multiplied."""
  q: jax.Array
  scale: jax.Array

  def matrix(self, k: int, n: int) -> "Int8Kernel":
    """The kernel as [K, N] (its input axes lead), with its scale as [N]."""
    return Int8Kernel(self.q.reshape(k, n), self.scale.reshape(n))


def shape_of(w) -> tuple[int, ...]:
  """The kernel's shape, float or `Int8Kernel`."""
  return w.q.shape if isinstance(w, Int8Kernel) else w.shape


def as_matrix(w, k: int, n: int):
  """A kernel whose input axes lead, as [K, N] (an `Int8Kernel` with its scale as [N])."""
  return w.matrix(k, n) if isinstance(w, Int8Kernel) else w.reshape(k, n)


def project(x_BxTxK, w, dtype) -> jax.Array:
  """x @ w for a float kernel w [K, N] or an `Int8Kernel` of it (`Int8Kernel.matrix`):
  [B, T, N] in `dtype`."""
  if not isinstance(w, Int8Kernel):
    return jnp.einsum("btk,kn->btn", x_BxTxK, w.astype(dtype))
  b, t, k = x_BxTxK.shape
  if b * t > INT8_MATVEC_ROWS:
    return jnp.einsum("btk,kn->btn", x_BxTxK, dequantize(w.q, w.scale[None], dtype))
  from adaptive_jax.nn import int8_matvec  # builds the custom calls on first use
  return int8_matvec.matvec_kxn(x_BxTxK.reshape(b * t, k), w.q, w.scale).reshape(
      b, t, -1).astype(dtype)


def project_rows(x_BxTxK, q_NxK, scale_Nx1, dtype) -> jax.Array:
  """x @ (q * scale).T for an int8 table stored [N, K] with one scale per row (the tied
  embedding as the output projection): [B, T, N] in `dtype`, through the int8 custom call for
  at most INT8_MATVEC_ROWS rows."""
  b, t, k = x_BxTxK.shape
  if b * t > INT8_MATVEC_ROWS:
    return jnp.einsum("btk,nk->btn", x_BxTxK, dequantize(q_NxK, scale_Nx1, dtype))
  from adaptive_jax.nn import int8_matvec
  return int8_matvec.matvec_nxk(x_BxTxK.reshape(b * t, k), q_NxK, scale_Nx1).reshape(
      b, t, -1).astype(dtype)


def _scale_axes(logical_axes, input_axes):
  return tuple(None if i in input_axes else a for i, a in enumerate(logical_axes))


def kernel(module: nn.Module, name: str, init, logical_axes: tuple[str, ...], shape, cfg):
  """The kernel `name` of `module`: the float param itself, or, under int8, int8 `name` and
  float32 `name_scale` params dequantized to the activation dtype (`int8_matvec` "xla") or
  kept apart as an `Int8Kernel` ("cpu")."""
  if cfg.weight_quant == "none":
    return module.param(name, nn.with_logical_partitioning(init, logical_axes), shape,
                        cfg.weight_dtype)
  axes = INPUT_AXES[name]
  q = module.param(name, nn.with_logical_partitioning(nn.initializers.zeros, logical_axes),
                   shape, jnp.int8)
  scale_shape = tuple(1 if i in axes else n for i, n in enumerate(shape))
  scale = module.param(name + SCALE, nn.with_logical_partitioning(
      nn.initializers.ones, _scale_axes(logical_axes, axes)), scale_shape, jnp.float32)
  if cfg.int8_matvec == "cpu":
    return Int8Kernel(q, scale)
  return dequantize(q, scale, cfg.activation_dtype)


class Int8Embed(nn.Module):
  """nn.Embed's lookup over an int8 table with one scale per row (the tied output projection
  reads the table in `Transformer.logits`)."""
  num_embeddings: int
  features: int
  dtype: jnp.dtype
  logical_axes: tuple[str, str] = ("vocab", "embed")

  def setup(self):
    shape = (self.num_embeddings, self.features)
    self.embedding = self.param("embedding", nn.with_logical_partitioning(
        nn.initializers.zeros, self.logical_axes), shape, jnp.int8)
    self.embedding_scale = self.param("embedding" + SCALE, nn.with_logical_partitioning(
        nn.initializers.ones, (self.logical_axes[0], None)), (self.num_embeddings, 1),
        jnp.float32)

  def __call__(self, tokens_BxT):
    rows = jnp.take(self.embedding, tokens_BxT, axis=0)
    return dequantize(rows, jnp.take(self.embedding_scale, tokens_BxT, axis=0), self.dtype)


def quantize_params(cfg, params):
  """(cfg with weight_quant "int8", params of that model) from a float model's params: every
  kernel of INPUT_AXES becomes int8 plus its scale; the rest is kept as it is."""
  if cfg.weight_quant != "none":
    raise ValueError(f"model.weight_quant is {cfg.weight_quant!r}; quantize_params takes a "
                     "float model (weight_quant 'none')")
  params = nn.meta.unbox(params)

  def convert(tree, stacked):
    out = {}
    for key, value in tree.items():
      if isinstance(value, Mapping):
        out[key] = convert(value, int(stacked or key == "layers"))
      elif key in INPUT_AXES:
        axes = tuple(a + stacked for a in INPUT_AXES[key])
        q, scale = quantize_int8(jax.device_get(value), axes)
        out[key], out[key + SCALE] = jnp.asarray(q), jnp.asarray(scale)
      else:
        out[key] = value
    return out

  return dataclasses.replace(cfg, weight_quant="int8"), convert(params, 0)


WEIGHT_FORMATS = ("float32", "bfloat16", "int8")


def convert_weights(cfg, params, weights: str, field: str = "weights"):
  """(cfg, params) of a float32 model held as `weights`: "float32" as it is; "bfloat16"
  params and activations (the accelerator path; flax's RMSNorm takes its statistics in
  float32 and the logits come out float32);
  "int8" weight-only int8 with float32 activations (`quantize_params`)."""
  if weights not in WEIGHT_FORMATS:
    raise ValueError(f"{field} must be one of {WEIGHT_FORMATS}, got {weights!r}")
  if weights == "int8":
    return quantize_params(cfg, params)
  cfg = dataclasses.replace(cfg, dtype=weights, param_dtype=weights)
  return cfg, jax.tree.map(lambda x: jnp.asarray(x, weights), nn.meta.unbox(params))
