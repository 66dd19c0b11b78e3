"""A Llama GGUF checkpoint as our dense `Transformer`: config from metadata, dequantized params.

GGUF (llama.cpp's format) stores a weight of torch shape [out, in] as ggml shape [in, out];
`gguf.quants.dequantize` returns it as a NumPy [out, in] array, the torch layout. Our kernels are
[in, ...] (query [D, N, H], out [N, H, D], gate [D, F]), so each is transposed and reshaped.

Rotary convention: Hugging Face's Llama rotates feature pairs (i, i + H/2) ("rotate half", ours,
nn/rope.py); llama.cpp rotates adjacent pairs (2i, 2i + 1). The converter that wrote the file
therefore permuted the output rows of attn_q and attn_k within each head, row 2i <- row i and
row 2i + 1 <- row i + H/2 (H = 4: rows [0, 2, 1, 3]). `_unpermute` undoes it so our rotate-half
rope sees the original rows; tests/test_smollm2.py checks the logits against transformers.
"""

import dataclasses
import os
import pathlib

import flax.linen as nn
import gguf
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer

# The quantization types this loader reads: plain floats and the block quants without
# super-blocks. The SmolLM2 file uses F32, Q8_0 (embeddings) and Q4_1.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
ARCHITECTURE = "llama"
_MAGIC = b"GGUF"


class GGUFError(ValueError):
  """A file this loader cannot turn into our model; the message names the problem."""


@dataclasses.dataclass(frozen=True)
class GGUFFile:
  """An opened, validated GGUF file: its metadata as Python values and its tensors by name."""
  path: str
  metadata: dict
  tensors: dict  # name -> gguf.ReaderTensor (memory-mapped, not yet dequantized)

  def get(self, key: str, default=None):
    return self.metadata.get(key, default)

  def require(self, key: str):
    if key not in self.metadata:
      raise GGUFError(f"{self.path}: metadata key {key!r} is missing")
    return self.metadata[key]


def read(path: str | os.PathLike) -> GGUFFile:
  """Opens and validates a GGUF file (magic, complete tensor data, supported types)."""
  path = str(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"GGUF file not found: {path}")
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    magic = f.read(4)
  if len(magic) < 4:
    raise GGUFError(f"{path} is truncated: {size} bytes, not even the 4-byte GGUF magic")
  if magic != _MAGIC:
    raise GGUFError(f"{path} is not a GGUF file: starts with {magic!r}, not {_MAGIC!r}")
  try:
    reader = gguf.GGUFReader(path)
  except (ValueError, IndexError, EOFError) as e:
    # The reader maps the whole file and fails on the first field or tensor past its end.
    raise GGUFError(f"{path} is truncated or corrupt ({size:,} bytes): {e}") from e
  for t in reader.tensors:
    if t.data_offset + t.n_bytes > size:
      raise GGUFError(f"{path} is truncated: tensor {t.name!r} ends at byte "
                      f"{t.data_offset + t.n_bytes:,}, the file has {size:,}")
  unsupported = sorted({(t.tensor_type.name, t.name) for t in reader.tensors
                        if t.tensor_type.name not in SUPPORTED_TYPES})
  if unsupported:
    kinds = sorted({kind for kind, _ in unsupported})
    raise GGUFError(f"{path}: unsupported quantization type {', '.join(kinds)} (tensor "
                    f"{unsupported[0][1]!r} of {len(unsupported)}); supported: "
                    f"{', '.join(SUPPORTED_TYPES)}")
  metadata = {key: field.contents() for key, field in reader.fields.items()}
  return GGUFFile(path, metadata, {t.name: t for t in reader.tensors})


def _check_no_rope_scaling(file: GGUFFile) -> None:
  """Raises naming the key when the file asks for rope scaling, which our rope does not do.

  llama.cpp scales positions when `rope.scaling.type` is set to anything but "none", and by
  1 / factor whenever `rope.scaling.factor` (or the older `rope.scale_linear`) is not 0 or 1,
  even with no type.
  """
  key = f"{ARCHITECTURE}.rope.scaling.type"
  kind = file.get(key, "none")
  if kind != "none":
    raise GGUFError(f"{file.path}: metadata {key} = {kind!r}; our rope implements no scaling, "
                    "only 'none'")
  for key in (f"{ARCHITECTURE}.rope.scaling.factor", f"{ARCHITECTURE}.rope.scale_linear"):
    factor = file.get(key)
    if factor is not None and float(factor) not in (0.0, 1.0):
      raise GGUFError(f"{file.path}: metadata {key} = {factor}; our rope implements no "
                      "scaling (only 0 or 1)")


def model_config(file: GGUFFile, *, dtype: str = "float32", max_len: int | None = None
                 ) -> ModelConfig:
  """Our dense ModelConfig from the file's `llama.*` metadata.

  Every key the model depends on is read or required (a missing one raises naming it): no
  silent default for the rope base or the number of KV heads, and rope scaling raises.
  """
  arch = file.get("general.architecture")
  if arch != ARCHITECTURE:
    raise GGUFError(f"{file.path}: unknown architecture {arch!r} (general.architecture); "
                    f"this loader reads {ARCHITECTURE!r} only")
  hp = lambda key: file.require(f"{ARCHITECTURE}.{key}")
  d_model, num_heads = int(hp("embedding_length")), int(hp("attention.head_count"))
  head_dim = d_model // num_heads
  rope_dims = file.get(f"{ARCHITECTURE}.rope.dimension_count", head_dim)
  if rope_dims != head_dim:
    raise GGUFError(f"{file.path}: rotary positions on {rope_dims} of {head_dim} head features; "
                    f"our rope rotates them all")
  _check_no_rope_scaling(file)
  embed = file.tensors.get("token_embd.weight")
  if embed is None:
    raise GGUFError(f"{file.path}: tensor 'token_embd.weight' is missing")
  vocab_size = int(file.get(f"{ARCHITECTURE}.vocab_size", embed.shape[-1]))
  return ModelConfig(
      vocab_size=vocab_size, num_layers=int(hp("block_count")), d_model=d_model,
      num_heads=num_heads, head_dim=head_dim, d_ff_big=int(hp("feed_forward_length")),
      d_ff_small=0, duo=False,
      max_len=int(max_len or hp("context_length")),
      num_kv_heads=int(hp("attention.head_count_kv")),
      scale_embeddings=False,
      rope_theta=float(hp("rope.freq_base")),
      norm_eps=float(hp("attention.layer_norm_rms_epsilon")),
      tie_embeddings="output.weight" not in file.tensors,
      dtype=dtype, param_dtype="float32")


def _unpermute(w_OxI, heads: int):
  """Undoes the converter's rope permutation of attn_q / attn_k rows (see the module doc)."""
  out, d_in = w_OxI.shape
  return w_OxI.reshape(heads, out // heads // 2, 2, d_in).swapaxes(1, 2).reshape(out, d_in)


def load_params(file: GGUFFile, cfg: ModelConfig):
  """Dequantized float32 params shaped and named as `Transformer(cfg).init` makes them."""
  def tensor(name):
    if name not in file.tensors:
      raise GGUFError(f"{file.path}: tensor {name!r} is missing")
    t = file.tensors[name]
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)

  d, n, k, h = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_dim
  def layer(i):
    w = lambda part: tensor(f"blk.{i}.{part}.weight")
    return {
        "attention_norm": {"scale": w("attn_norm")},
        "attention": {
            "query": _unpermute(w("attn_q"), n).T.reshape(d, n, h),
            "key": _unpermute(w("attn_k"), k).T.reshape(d, k, h),
            "value": w("attn_v").T.reshape(d, k, h),
            "out": w("attn_output").T.reshape(n, h, d),
        },
        "ffn_norm": {"scale": w("ffn_norm")},
        "ffn": {"gate": w("ffn_gate").T, "up": w("ffn_up").T, "down": w("ffn_down").T},
    }
  layers = [layer(i) for i in range(cfg.num_layers)]
  params = {
      "embed": {"embedding": tensor("token_embd.weight")},
      "final_norm": {"scale": tensor("output_norm.weight")},
      "layers": jax.tree.map(lambda *xs: np.stack(xs), *layers),
  }
  if not cfg.tie_embeddings:
    params["unembed"] = tensor("output.weight").T
  _check_shapes(file.path, cfg, params)
  return jax.tree.map(jnp.asarray, params)


def _check_shapes(path: str, cfg: ModelConfig, params):
  """Every param's name and shape must be the ones our model initializes."""
  abstract = jax.eval_shape(Transformer(cfg).init, jax.random.key(0),
                            jnp.zeros((1, 1), jnp.int32))
  shapes = lambda tree: {(jax.tree_util.keystr(p), tuple(x.shape))
                         for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  diff = shapes(nn.meta.unbox(abstract)["params"]) ^ shapes(params)
  if diff:
    raise GGUFError(f"{path}: params do not match the model's (name, shape): {sorted(diff)[:6]}")


def load(path: str | os.PathLike, *, dtype: str = "float32", max_len: int | None = None):
  """(cfg, params) of a Llama GGUF file; params float32, activations in `dtype`."""
  file = read(pathlib.Path(path))
  cfg = model_config(file, dtype=dtype, max_len=max_len)
  return cfg, load_params(file, cfg)
