"""A Hugging Face checkpoint (config.json + *.safetensors) as our dense `Transformer`, and back.

Families: LlamaForCausalLM, Qwen2ForCausalLM (q/k/v biases) and MistralForCausalLM, with
grouped-query attention, tied or untied embeddings, rope theta, rope scaling of type "llama3"
and RMSNorm epsilon; tensors stored as F32, F16 or BF16, in one `model.safetensors` or sharded
with `model.safetensors.index.json`.

  cfg, params = safetensors_checkpoint.load("Llama-3.2-1B")   # params as Transformer(cfg).init
  safetensors_checkpoint.save("out", cfg, params)            # config.json + model.safetensors

Hugging Face stores a linear weight as torch [out, in]; our kernels are [in, ...] (query
[D, N, H], out [N, H, D], gate [D, F]), so each is transposed and reshaped. Its Llama rotates
feature pairs (i, i + H/2), as nn/rope.py does, so unlike GGUF (gguf.py) no row permutation.
Tensors are read one at a time (`safe_open`) into one param (stacked over layers), which goes
to the device (with its sharding, if given) before the next is built: besides the params,
loading holds one stacked param and one tensor in host memory, not a second checkpoint.
"""

import contextlib
import json
import math
import os
import pathlib
import re
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers numpy's 'bfloat16', which safe_open returns for BF16)
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer

# architecture -> (model_type, q/k/v biases)
ARCHITECTURES = {"LlamaForCausalLM": ("llama", False), "Qwen2ForCausalLM": ("qwen2", True),
                 "MistralForCausalLM": ("mistral", False)}
STORAGE_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Buffers older transformers versions saved beside the weights; recomputed, never read.
_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


class SafetensorsError(ValueError):
  """A checkpoint this loader cannot turn into our model; the message names the problem."""


def read_config(directory: str | os.PathLike) -> dict:
  path = pathlib.Path(directory) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"Hugging Face config not found: {path}")
  return json.loads(path.read_text())


def _rope(hf: dict, where: str):
  """(rope_theta, our rope_scaling) from `rope_theta` + `rope_scaling`, or transformers v5's
  `rope_parameters`; a scaling type other than "llama3" raises naming the field."""
  field = "rope_parameters" if "rope_parameters" in hf else "rope_scaling"
  scaling = dict(hf.get(field) or {})
  theta = float(scaling.pop("rope_theta", hf.get("rope_theta", 10_000.0)))
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind == "default":
    return theta, None
  if kind != "llama3":
    raise SafetensorsError(f"{where}: {field}.rope_type = {kind!r} is not supported; "
                           "supported: 'default', 'llama3'")
  keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
  for key in keys:
    if key not in scaling:
      raise SafetensorsError(f"{where}: {field}.{key} is missing (rope type 'llama3')")
  return theta, (float(scaling["factor"]), float(scaling["low_freq_factor"]),
                 float(scaling["high_freq_factor"]),
                 int(scaling["original_max_position_embeddings"]))


def model_config(hf: dict, *, dtype: str = "float32", param_dtype: str = "float32",
                 max_len: int | None = None, where: str = "config.json") -> ModelConfig:
  """Our dense ModelConfig from a Hugging Face config; a field that changes the computation
  and that we do not implement raises naming it."""
  archs = hf.get("architectures") or []
  if len(archs) != 1 or archs[0] not in ARCHITECTURES:
    raise SafetensorsError(f"{where}: architectures = {archs!r}; supported: "
                           f"{', '.join(ARCHITECTURES)}")
  model_type, qkv_bias = ARCHITECTURES[archs[0]]
  if hf.get("model_type", model_type) != model_type:
    raise SafetensorsError(f"{where}: model_type = {hf['model_type']!r} for {archs[0]}; "
                           f"expected {model_type!r}")
  if hf.get("quantization_config"):
    raise SafetensorsError(f"{where}: quantization_config "
                           f"({hf['quantization_config'].get('quant_method', '?')}) is not "
                           "supported; F32, F16 or BF16 weights only")
  unsupported = {"hidden_act": ("silu", "swish"), "attention_bias": (False,),
                 "mlp_bias": (False,), "use_sliding_window": (False,),
                 "partial_rotary_factor": (1, 1.0)}
  for key, allowed in unsupported.items():
    if key in hf and hf[key] not in allowed:
      raise SafetensorsError(f"{where}: {key} = {hf[key]!r} is not supported; supported: "
                             f"{', '.join(map(repr, allowed))}")
  layer_types = set(hf.get("layer_types") or ["full_attention"])
  if layer_types != {"full_attention"}:
    raise SafetensorsError(f"{where}: layer_types = {sorted(layer_types)} is not supported; "
                           "only 'full_attention'")
  # Optional fields take transformers' defaults (rope_theta 1e4, rms_norm_eps 1e-6, kv heads =
  # query heads, untied embeddings, head_dim = hidden_size / heads); the shapes need these:
  def require(key):
    if key not in hf:
      raise SafetensorsError(f"{where}: field {key!r} is missing")
    return hf[key]
  num_heads = int(require("num_attention_heads"))
  context = int(require("max_position_embeddings"))
  # Mistral's sliding window: within it, attention is full causal attention, which ours is.
  window = hf.get("sliding_window") if model_type == "mistral" else None
  if window is not None and window < context:
    if max_len is not None and max_len > window:
      raise SafetensorsError(f"{where}: sliding_window = {window} < max_len = {max_len}; our "
                             "attention is exact only within the window")
    context = int(window)
  theta, scaling = _rope(hf, where)
  return ModelConfig(
      vocab_size=int(require("vocab_size")), num_layers=int(require("num_hidden_layers")),
      d_model=int(require("hidden_size")), num_heads=num_heads,
      head_dim=int(hf.get("head_dim") or require("hidden_size") // num_heads),
      d_ff_big=int(require("intermediate_size")), d_ff_small=0, duo=False,
      max_len=int(max_len or context),
      num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
      scale_embeddings=False, rope_theta=theta, rope_scaling=scaling, qkv_bias=qkv_bias,
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      dtype=dtype, param_dtype=param_dtype)


def weight_files(directory: pathlib.Path) -> dict[str, pathlib.Path]:
  """Tensor name -> the file holding it, from the index or the one `model.safetensors`."""
  if (directory / INDEX).is_file():
    weight_map = json.loads((directory / INDEX).read_text())["weight_map"]
    files = {name: directory / file for name, file in weight_map.items()}
    for file in sorted(set(files.values())):
      if not file.is_file():
        raise FileNotFoundError(f"{directory / INDEX} lists {file.name}, which is not there")
    return files
  if not (directory / SINGLE).is_file():
    found = sorted(p.name for p in directory.glob("*.safetensors"))
    raise FileNotFoundError(f"{directory}: neither {INDEX} nor {SINGLE}"
                            + (f" (found {found}: shards need the index)" if found else ""))
  with safe_open(directory / SINGLE, framework="np") as f:
    return {name: directory / SINGLE for name in f.keys()}


def _hf_names(cfg: ModelConfig):
  """(param path, Hugging Face name, torch tensor -> our param, our param -> torch tensor) per
  tensor; a stacked layer param's path ends with its layer index."""
  d, n, k, h = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_dim
  same = (lambda w: w, lambda p: p)
  transpose = (lambda w: w.T, lambda p: p.T)
  heads_in = lambda heads: (lambda w: w.T.reshape(d, heads, h), lambda p: p.reshape(d, -1).T)
  heads_out = (lambda w: w.T.reshape(n, h, d), lambda p: p.reshape(-1, d).T)
  bias = lambda heads: (lambda b: b.reshape(heads, h), lambda p: p.reshape(-1))
  names = [(("embed", "embedding"), "model.embed_tokens.weight", *same),
           (("final_norm", "scale"), "model.norm.weight", *same)]
  if not cfg.tie_embeddings:
    names.append((("unembed",), "lm_head.weight", *transpose))
  layer = [(("attention_norm", "scale"), "input_layernorm.weight", same),
           (("ffn_norm", "scale"), "post_attention_layernorm.weight", same),
           (("attention", "query"), "self_attn.q_proj.weight", heads_in(n)),
           (("attention", "key"), "self_attn.k_proj.weight", heads_in(k)),
           (("attention", "value"), "self_attn.v_proj.weight", heads_in(k)),
           (("attention", "out"), "self_attn.o_proj.weight", heads_out),
           (("ffn", "gate"), "mlp.gate_proj.weight", transpose),
           (("ffn", "up"), "mlp.up_proj.weight", transpose),
           (("ffn", "down"), "mlp.down_proj.weight", transpose)]
  if cfg.qkv_bias:
    layer += [(("attention", "query_bias"), "self_attn.q_proj.bias", bias(n)),
              (("attention", "key_bias"), "self_attn.k_proj.bias", bias(k)),
              (("attention", "value_bias"), "self_attn.v_proj.bias", bias(k))]
  for i in range(cfg.num_layers):
    names += [(("layers", *path, i), f"model.layers.{i}.{name}", *convert)
              for path, name, convert in layer]
  return names


def _abstract_params(cfg: ModelConfig):
  abstract = jax.eval_shape(Transformer(cfg).init, jax.random.key(0),
                            jnp.zeros((1, 1), jnp.int32))
  return nn.meta.unbox(abstract)["params"]


def load_params(directory: str | os.PathLike, cfg: ModelConfig, shardings=None, *,
                others: Callable[[str], bool] | None = None):
  """Params shaped and named as `Transformer(cfg).init` makes them, in cfg.param_dtype;
  `shardings` (a tree of `jax.sharding.Sharding` like the params) places each param. Tensors
  for which `others(name)` holds belong to another reader (a reward head): neither read nor
  refused as unexpected."""
  directory = pathlib.Path(directory)
  files = weight_files(directory)
  if others is not None:
    files = {name: file for name, file in files.items() if not others(name)}
  abstract = _abstract_params(cfg)
  names = _hf_names(cfg)
  expected = {name for _, name, _, _ in names}
  unexpected = sorted(name for name in files if name not in expected and not _IGNORED.fullmatch(
      name) and not (cfg.tie_embeddings and name == "lm_head.weight"))
  if unexpected:
    raise SafetensorsError(f"{directory}: unexpected tensor {unexpected[0]!r} "
                           f"({len(unexpected)} in all) for this config")
  missing = sorted(expected - set(files))
  if missing:
    raise SafetensorsError(f"{directory}: tensor {missing[0]!r} is missing "
                           f"({len(missing)} in all)")
  # One param at a time, each stacked over its layers, placed before the next is read.
  by_param = {}  # our param path -> [(layer index or None, name, convert)]
  for path, name, convert, _ in names:
    key, index = (path[:-1], path[-1]) if path[0] == "layers" else (path, None)
    by_param.setdefault(key, []).append((index, name, convert))
  params = {}
  with contextlib.ExitStack() as stack:
    # pread copies each tensor out of the file; mmap would also map every page read so far
    # into this process (on a 127 MB checkpoint: peak RSS +1.8x against +0.75x with pread).
    opened = {file: stack.enter_context(safe_open(file, framework="np", backend="pread"))
              for file in sorted(set(files.values()))}
    read = lambda name: _read(opened[files[name]], files[name], name)
    for key, entries in by_param.items():
      spec = _get(abstract, key)
      buffer = np.empty(spec.shape, spec.dtype)
      for index, name, convert in entries:
        w = read(name)
        try:
          value = convert(w)
        except ValueError:  # a reshape of the wrong size
          value = w
        target = buffer if index is None else buffer[index]
        if value.shape != target.shape:
          raise SafetensorsError(f"{files[name]}: tensor {name!r} has shape {list(w.shape)}, "
                                 f"which does not give our {'/'.join(key)} of shape "
                                 f"{list(target.shape)}")
        target[...] = value
      if key == ("embed", "embedding") and cfg.tie_embeddings and "lm_head.weight" in files:
        # transformers ties the head to the embeddings whatever the file holds: so must we
        if not np.array_equal(read("lm_head.weight").astype(buffer.dtype), buffer):
          raise SafetensorsError(f"{files['lm_head.weight']}: tensor 'lm_head.weight' differs "
                                 "from the embeddings but config.json sets tie_word_embeddings")
      *parents, last = key
      node = params
      for part in parents:
        node = node.setdefault(part, {})
      node[last] = jax.device_put(buffer, None if shardings is None else _get(shardings, key))
      del buffer
  return params


def _get(tree, key):
  for part in key:
    tree = tree[part]
  return tree


def _read(f, file, name):
  """Tensor `name` of the open file `f`, as stored; a dtype we do not read raises."""
  kind = f.get_slice(name).get_dtype()
  if kind not in STORAGE_DTYPES:
    raise SafetensorsError(f"{file}: tensor {name!r} is stored as {kind}; supported: "
                           f"{', '.join(STORAGE_DTYPES)}")
  return f.get_tensor(name)


def load(directory: str | os.PathLike, *, dtype: str = "float32", param_dtype: str = "float32",
         max_len: int | None = None, shardings=None):
  """(cfg, params) of a Hugging Face Llama, Qwen2 or Mistral checkpoint directory."""
  directory = pathlib.Path(directory)
  cfg = model_config(read_config(directory), dtype=dtype, param_dtype=param_dtype,
                     max_len=max_len, where=str(directory / "config.json"))
  return cfg, load_params(directory, cfg, shardings)


def hf_config(cfg: ModelConfig, architecture: str | None = None, torch_dtype: str = "float32"
              ) -> dict:
  """The config.json of `cfg` for `architecture` (default: Qwen2 with q/k/v biases, else
  Llama); a field the family cannot express raises naming it."""
  architecture = architecture or ("Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM")
  if architecture not in ARCHITECTURES:
    raise SafetensorsError(f"architecture {architecture!r} is not supported; supported: "
                           f"{', '.join(ARCHITECTURES)}")
  model_type, qkv_bias = ARCHITECTURES[architecture]
  for name, value, allowed in (("duo", cfg.duo, False), ("scale_embeddings",
                               cfg.scale_embeddings, False), ("qkv_bias", cfg.qkv_bias, qkv_bias)):
    if value != allowed:
      raise SafetensorsError(f"model.{name} = {value!r} cannot be written as {architecture} "
                             f"(needs {allowed!r})")
  if cfg.rope_scaling is not None and model_type != "llama":
    raise SafetensorsError(f"model.rope_scaling cannot be written as {architecture}")
  hf = {"architectures": [architecture], "model_type": model_type,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff_big, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim, "hidden_act": "silu", "max_position_embeddings": cfg.max_len,
        "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta, "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_embeddings, "torch_dtype": torch_dtype}
  if cfg.rope_scaling is not None:
    factor, low, high, original = cfg.rope_scaling
    hf["rope_scaling"] = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                          "high_freq_factor": high, "original_max_position_embeddings": original}
  if model_type == "llama":
    hf.update(attention_bias=False, mlp_bias=False)
  else:
    hf.update(sliding_window=None, use_sliding_window=False)
  return hf


def save(directory: str | os.PathLike, cfg: ModelConfig, params, *,
         architecture: str | None = None, storage_dtype: str | None = None,
         max_shard_bytes: int = 5 * 2**30) -> pathlib.Path:
  """Writes config.json and model.safetensors (or shards of at most `max_shard_bytes`, a
  larger tensor alone, with model.safetensors.index.json) that `load` and transformers read.

  `storage_dtype` "F32", "F16" or "BF16" (default: the params' own dtype). Host memory holds
  one shard's tensors at a time.
  """
  if storage_dtype is None:
    by_dtype = {np.dtype(v): k for k, v in STORAGE_DTYPES.items()}
    storage_dtype = by_dtype.get(np.dtype(jax.tree.leaves(params)[0].dtype))
  if storage_dtype not in STORAGE_DTYPES:
    raise SafetensorsError(f"storage_dtype {storage_dtype!r}; supported: "
                           f"{', '.join(STORAGE_DTYPES)}")
  dtype = STORAGE_DTYPES[storage_dtype]
  hf = hf_config(cfg, architecture, np.dtype(dtype).name)
  shapes = lambda tree: {(jax.tree_util.keystr(p), tuple(x.shape))
                         for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  diff = shapes(_abstract_params(cfg)) ^ shapes(params)
  if diff:
    raise SafetensorsError(f"params do not match the model's (name, shape): {sorted(diff)[:6]}")
  shards, size = [[]], 0
  for path, name, _, to_hf in _hf_names(cfg):
    leaf, index = _leaf(params, path)
    nbytes = math.prod(leaf.shape[index is not None:]) * np.dtype(dtype).itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append((path, name, to_hf))
    size += nbytes
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  files = ([SINGLE] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  for file, shard in zip(files, shards):
    tensors = {}
    for path, name, to_hf in shard:
      leaf, index = _leaf(params, path)
      value = np.asarray(leaf if index is None else leaf[index])
      tensors[name] = np.ascontiguousarray(to_hf(value).astype(dtype))
    save_file(tensors, directory / file, metadata={"format": "pt"})
    del tensors
  index = directory / INDEX
  if len(shards) > 1:
    weight_map = {name: file for file, shard in zip(files, shards) for _, name, _ in shard}
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2) + "\n")
  elif index.exists():  # a stale index would be read before the new file
    index.unlink()
  (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
  return directory


def _leaf(tree, path):
  """(the leaf at `path`, its layer index or None): a stacked layer param's path ends with
  its layer index."""
  *keys, index = path if path[0] == "layers" else (*path, None)
  for key in keys:
    tree = tree[key]
  return tree, index
