"""Model hyperparameters as a frozen dataclass, validated where they enter the library."""

import dataclasses

import jax.numpy as jnp

from adaptive_jax.typed_config import check_choice, check_int, from_mapping, is_number

DTYPES = ("float32", "bfloat16", "float16")
FFN_IMPLS = ("masked", "dispatch")
WEIGHT_QUANTS = ("none", "int8")
INT8_MATVECS = ("xla", "cpu")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A Llama-style decoder whose FFN layers are Duo-FFNs (big + small) or plain SwiGLU."""
  vocab_size: int
  num_layers: int
  d_model: int
  num_heads: int  # query heads
  head_dim: int
  d_ff_big: int
  d_ff_small: int
  max_len: int
  duo: bool = True  # False: a plain dense transformer with one FFN of width d_ff_big
  # Key/value heads (grouped-query attention: query head n reads kv head n // (N / K));
  # None: one per query head (multi-head attention).
  num_kv_heads: int | None = None
  # Token embeddings times sqrt(d_model) at the input (our models); Llama checkpoints: False.
  scale_embeddings: bool = True
  rope_theta: float = 10_000.0
  # Llama 3.1's rope frequency scaling (rope_scaling type "llama3", nn/rope.py):
  # (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings); None: none.
  rope_scaling: tuple[float, float, float, int] | None = None
  qkv_bias: bool = False  # biases on the query, key and value projections (Qwen2)
  norm_eps: float = 1e-6
  tie_embeddings: bool = True
  dtype: str = "float32"  # activations; bfloat16 on TPU/GPU
  param_dtype: str = "float32"
  # "int8": kernels and the token embedding stored as int8 with a float32 scale per output
  # channel (nn/quantize.py), dequantized to `dtype` where they are used; norms, biases and
  # routers stay in param_dtype. Inference only: made by `quantize.quantize_params`.
  weight_quant: str = "none"
  # How int8 kernels multiply (weight_quant "int8", float32 activations, a dense model):
  # "xla" dequantizes then multiplies (any batch); "cpu" streams the int8 weights through the
  # custom calls of nn/int8_matvec.py where a product has at most INT8_MATVEC_ROWS rows (batch-1
  # decode on CPU: a quarter of float32's bytes), and dequantizes for larger ones.
  int8_matvec: str = "xla"
  remat: bool = False  # rematerialize each layer in the backward pass
  # A Duo FFN under hard routes: "masked" (each FFN on the whole batch if any token uses it,
  # then a per-token select) or "dispatch" (each FFN on its own tokens, nn/dispatch.py), with
  # buffers of capacity(tokens, fraction) rows per route and layer; tokens past a buffer drop
  # to SKIP and are counted (`dispatch.overflow`). A fraction of 1 runs that FFN densely.
  ffn_impl: str = "masked"
  dispatch_small_fraction: float = 1.0
  dispatch_big_fraction: float = 1.0
  dispatch_groups: int = 1  # blocks dispatched on their own: the number of 'data' shards

  def __post_init__(self):
    for name in ("vocab_size", "num_layers", "d_model", "num_heads", "head_dim", "d_ff_big",
                 "max_len"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
    if (isinstance(self.d_ff_small, bool) or not isinstance(self.d_ff_small, int)
        or self.d_ff_small <= 0 and self.duo):
      raise ValueError(f"model.d_ff_small must be a positive integer for a Duo model, "
                       f"got {self.d_ff_small!r}")
    if self.num_kv_heads is not None and (
        isinstance(self.num_kv_heads, bool) or not isinstance(self.num_kv_heads, int)
        or self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads):
      raise ValueError(f"model.num_kv_heads must be None or a positive divisor of "
                       f"model.num_heads={self.num_heads}, got {self.num_kv_heads!r}")
    if self.head_dim % 2:
      raise ValueError(f"model.head_dim must be even (rotary positions rotate pairs), "
                       f"got {self.head_dim}")
    if self.rope_scaling is not None:
      if isinstance(self.rope_scaling, list):  # read back from JSON (dataclasses.asdict)
        object.__setattr__(self, "rope_scaling", tuple(self.rope_scaling))
      scaling = self.rope_scaling
      if (not isinstance(scaling, tuple) or len(scaling) != 4
          or not all(is_number(v) and v > 0 for v in scaling) or scaling[1] >= scaling[2]):
        raise ValueError("model.rope_scaling must be None or (factor, low_freq_factor, "
                         "high_freq_factor, original_max_position_embeddings), positive, "
                         f"low_freq_factor < high_freq_factor, got {scaling!r}")
    if not isinstance(self.qkv_bias, bool):
      raise ValueError(f"model.qkv_bias must be a bool, got {self.qkv_bias!r}")
    check_choice("model", "ffn_impl", self.ffn_impl, FFN_IMPLS)
    check_choice("model", "weight_quant", self.weight_quant, WEIGHT_QUANTS)
    check_choice("model", "int8_matvec", self.int8_matvec, INT8_MATVECS)
    if self.int8_matvec == "cpu" and (self.weight_quant != "int8" or self.duo
                                      or self.dtype != "float32"):
      raise ValueError("model.int8_matvec='cpu' needs model.weight_quant='int8', "
                       "model.duo=False and model.dtype='float32' (its kernels take float32 "
                       f"rows); got weight_quant={self.weight_quant!r}, duo={self.duo!r}, "
                       f"dtype={self.dtype!r}")
    for name in ("dispatch_small_fraction", "dispatch_big_fraction"):
      value = getattr(self, name)
      if not is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"model.{name} must be a number in [0, 1], got {value!r}")
    check_int("model", "dispatch_groups", self.dispatch_groups)
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"model.{name} must be one of {DTYPES}, got {getattr(self, name)!r}")

  @property
  def kv_heads(self) -> int:
    """K: the number of key/value heads."""
    return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

  @property
  def activation_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self):
    return jnp.dtype(self.param_dtype)

  @classmethod
  def from_dict(cls, values) -> "ModelConfig":
    """Builds from a ConfigDict or mapping; unknown keys raise an error naming them."""
    return from_mapping(cls, values, "model")
