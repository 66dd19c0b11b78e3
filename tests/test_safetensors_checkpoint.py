"""Hugging Face safetensors checkpoints, written here with NumPy (no download, no torch).

Tiny random Llama, Qwen2 and Mistral checkpoints in Hugging Face's names and torch [out, in]
layout must give the logits of a NumPy forward written from Hugging Face's modeling code
(rotate-half rope, kv heads repeated, q/k/v biases, Llama 3.1 frequency scaling).
"""

import dataclasses
import json
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from adaptive_jax.models import gguf
from adaptive_jax.models import safetensors_checkpoint as st
from adaptive_jax.nn.kv_cache import KVCache, causal_access
from adaptive_jax.nn.rope import inverse_frequencies
from adaptive_jax.nn.transformer import Transformer

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import tiny_llama_gguf  # noqa: E402

V, D, N, K, H, F, L = 48, 32, 4, 2, 8, 40, 2
TOKENS_T = np.array([3, 17, 42, 5, 47, 0, 9, 9, 21, 30, 11, 2])
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
ARCH = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
        "mistral": "MistralForCausalLM"}


def _hf_config(family="llama", *, kv_heads=K, tied=False, rope_scaling=None, **extra):
  return {"architectures": [ARCH[family]], "model_type": family, "vocab_size": V,
          "hidden_size": D, "intermediate_size": F, "num_hidden_layers": L,
          "num_attention_heads": N, "num_key_value_heads": kv_heads, "hidden_act": "silu",
          "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 300.0,
          "rope_scaling": rope_scaling, "tie_word_embeddings": tied, "torch_dtype": "float32",
          **extra}


def _hf_tensors(hf, seed=0):
  """Random weights under Hugging Face's names, torch [out, in] layout."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.normal(0, 0.25, shape).astype(np.float32)
  scale = lambda: (1 + 0.2 * rng.normal(size=D)).astype(np.float32)
  k = hf["num_key_value_heads"]
  t = {"model.embed_tokens.weight": normal(V, D), "model.norm.weight": scale()}
  if not hf["tie_word_embeddings"]:
    t["lm_head.weight"] = normal(V, D)
  for i in range(L):
    p = f"model.layers.{i}."
    t |= {p + "input_layernorm.weight": scale(), p + "post_attention_layernorm.weight": scale(),
          p + "self_attn.q_proj.weight": normal(N * H, D),
          p + "self_attn.k_proj.weight": normal(k * H, D),
          p + "self_attn.v_proj.weight": normal(k * H, D),
          p + "self_attn.o_proj.weight": normal(D, N * H),
          p + "mlp.gate_proj.weight": normal(F, D), p + "mlp.up_proj.weight": normal(F, D),
          p + "mlp.down_proj.weight": normal(D, F)}
    if hf["model_type"] == "qwen2":
      t |= {p + "self_attn.q_proj.bias": normal(N * H), p + "self_attn.k_proj.bias": normal(k * H),
            p + "self_attn.v_proj.bias": normal(k * H)}
  return t


def _write(directory, hf, tensors, *, dtype=np.float32, shards=1):
  """config.json and the tensors in `shards` files (with an index when more than one);
  returns the tensors as stored, in float64."""
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(hf))
  stored = {name: w if dtype is None else w.astype(dtype) for name, w in tensors.items()}
  names = sorted(stored)
  if shards == 1:
    save_file(stored, directory / "model.safetensors")
  else:
    weight_map = {}
    for s in range(shards):
      file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
      save_file({n: stored[n] for n in names[s::shards]}, directory / file)
      weight_map |= {n: file for n in names[s::shards]}
    (directory / st.INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
  return {name: w.astype(np.float64) for name, w in stored.items()}


def _llama3_inv_freq(hf_scaling, theta, head_dim):
  """transformers' `_compute_llama3_parameters`, frequency by frequency."""
  factor, low, high = (hf_scaling[k] for k in ("factor", "low_freq_factor", "high_freq_factor"))
  original = hf_scaling["original_max_position_embeddings"]
  out = []
  for f in theta ** (-np.arange(0, head_dim, 2) / head_dim):
    wavelen = 2 * math.pi / f
    if wavelen < original / high:
      out.append(f)
    elif wavelen > original / low:
      out.append(f / factor)
    else:
      smooth = (original / wavelen - low) / (high - low)
      out.append((1 - smooth) * f / factor + smooth * f)
  return np.array(out)


def _hf_forward(hf, w, tokens_T):
  """LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM in NumPy float64."""
  eps, theta, k = hf["rms_norm_eps"], hf["rope_theta"], hf["num_key_value_heads"]
  rms = lambda x, s: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * s
  t = len(tokens_T)
  if hf["rope_scaling"]:
    inv_freq = _llama3_inv_freq(hf["rope_scaling"], theta, H)
  else:
    inv_freq = theta ** (-np.arange(0, H, 2) / H)
  angle = np.arange(t)[:, None, None] * np.concatenate([inv_freq, inv_freq])  # [T, 1, H]
  rotate_half = lambda x: np.concatenate([-x[..., H // 2:], x[..., :H // 2]], -1)
  rope = lambda x: x * np.cos(angle) + rotate_half(x) * np.sin(angle)
  def linear(x, name, heads):
    y = x @ w[name + ".weight"].T + w.get(name + ".bias", 0.0)
    return y.reshape(t, heads, H)
  x = w["model.embed_tokens.weight"][tokens_T]
  for i in range(hf["num_hidden_layers"]):
    p = f"model.layers.{i}."
    h = rms(x, w[p + "input_layernorm.weight"])
    q = rope(linear(h, p + "self_attn.q_proj", N))
    key = np.repeat(rope(linear(h, p + "self_attn.k_proj", k)), N // k, axis=1)
    v = np.repeat(linear(h, p + "self_attn.v_proj", k), N // k, axis=1)
    scores = np.einsum("tnh,snh->nts", q, key) / np.sqrt(H) + np.triu(np.full((t, t), -np.inf), 1)
    prob = np.exp(scores - scores.max(-1, keepdims=True))
    o = np.einsum("nts,snh->tnh", prob / prob.sum(-1, keepdims=True), v).reshape(t, N * H)
    x = x + o @ w[p + "self_attn.o_proj.weight"].T
    h = rms(x, w[p + "post_attention_layernorm.weight"])
    g = h @ w[p + "mlp.gate_proj.weight"].T
    x = x + (g / (1 + np.exp(-g)) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[
        p + "mlp.down_proj.weight"].T
  head = w["model.embed_tokens.weight"] if hf["tie_word_embeddings"] else w["lm_head.weight"]
  return rms(x, w["model.norm.weight"]) @ head.T


def _ours(cfg, params, tokens_T=TOKENS_T):
  return np.asarray(Transformer(cfg).apply({"params": params}, jnp.asarray(tokens_T)[None])[0])


CASES = {
    "llama_gqa_untied": dict(family="llama"),
    "llama_mha_tied": dict(family="llama", kv_heads=N, tied=True),
    "llama_mqa_llama3_scaling": dict(family="llama", kv_heads=1, rope_scaling=LLAMA3),
    "qwen2_biases_tied": dict(family="qwen2", tied=True, use_sliding_window=False,
                              sliding_window=4096),
    "mistral_gqa": dict(family="mistral", sliding_window=None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_checkpoint_gives_the_hugging_face_logits(tmp_path, case):
  hf = _hf_config(**CASES[case])
  stored = _write(tmp_path, hf, _hf_tensors(hf))
  cfg, params = st.load(tmp_path)
  assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.d_ff_big,
          cfg.vocab_size, cfg.max_len) == (L, D, N, hf["num_key_value_heads"], H, F, V, 64)
  assert cfg.tie_embeddings == hf["tie_word_embeddings"] and not cfg.scale_embeddings
  assert cfg.qkv_bias == (hf["model_type"] == "qwen2")
  reference = _hf_forward(hf, stored, TOKENS_T)
  assert np.abs(_ours(cfg, params) - reference).max() <= 1e-4


@pytest.mark.parametrize("dtype, shards", [(ml_dtypes.bfloat16, 1), (np.float16, 3),
                                           (np.float32, 2)])
def test_sharded_and_half_precision_storage(tmp_path, dtype, shards):
  hf = _hf_config("qwen2", rope_scaling=None)
  stored = _write(tmp_path, hf, _hf_tensors(hf, seed=1), dtype=dtype, shards=shards)
  cfg, params = st.load(tmp_path)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  # The stored half-precision values, upcast exactly: the float32 tolerance holds.
  assert np.abs(_ours(cfg, params) - _hf_forward(hf, stored, TOKENS_T)).max() <= 1e-4
  cfg16, params16 = st.load(tmp_path, param_dtype="bfloat16")
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(params16))


def test_params_match_eval_shape_of_our_model_and_take_shardings(tmp_path):
  hf = _hf_config("qwen2", tied=False)
  _write(tmp_path, hf, _hf_tensors(hf))
  cfg = st.model_config(hf)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shardings = jax.tree.map(lambda _: sharding, st._abstract_params(cfg))
  cfg, params = st.load(tmp_path, shardings=shardings)
  assert all(p.sharding == sharding for p in jax.tree.leaves(params))
  abstract = st._abstract_params(cfg)
  assert jax.tree.structure(abstract) == jax.tree.structure(params)
  assert all(a.shape == p.shape for a, p in zip(jax.tree.leaves(abstract), jax.tree.leaves(params)))


def test_llama3_inverse_frequencies_by_hand():
  # H = 8, theta = 1e4: frequencies 1, 0.1, 0.01, 0.001; wavelengths 2 pi / f = 6.3, 63, 628,
  # 6283 against original 128: high-frequency bound 128 / 4 = 32, low-frequency bound 128 / 1.
  # 6.3 < 32 keeps 1; 628 and 6283 > 128 are divided by 8; 63 is between: s = (128 / 63 - 1) / 3.
  s = (128 * 0.1 / (2 * math.pi) - 1) / 3
  expected = [1.0, (1 - s) * 0.1 / 8 + s * 0.1, 0.01 / 8, 0.001 / 8]
  assert 0 < s < 1
  ours = inverse_frequencies(8, 1e4, (8.0, 1.0, 4.0, 128))
  np.testing.assert_allclose(ours, expected, rtol=1e-6)
  np.testing.assert_allclose(_llama3_inv_freq({"factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 128},
                                              1e4, 8), expected, rtol=1e-12)
  np.testing.assert_allclose(inverse_frequencies(8, 1e4), [1, 0.1, 0.01, 0.001], rtol=1e-6)


def test_transformers_v5_rope_parameters_are_read(tmp_path):
  hf = _hf_config("llama")
  hf.pop("rope_theta"), hf.pop("rope_scaling")
  hf["rope_parameters"] = {**LLAMA3, "rope_theta": 300.0}
  cfg = st.model_config(hf)
  assert cfg.rope_theta == 300.0 and cfg.rope_scaling == (8.0, 1.0, 4.0, 16)


@pytest.mark.parametrize("case", ["llama_gqa_untied", "llama_mqa_llama3_scaling",
                                  "qwen2_biases_tied", "mistral_gqa"])
def test_export_round_trip_is_exact(tmp_path, case):
  hf = _hf_config(**CASES[case])
  _write(tmp_path / "in", hf, _hf_tensors(hf))
  cfg, params = st.load(tmp_path / "in")
  st.save(tmp_path / "out", cfg, params, architecture=hf["architectures"][0])
  cfg2, params2 = st.load(tmp_path / "out")
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  # The written tensors are the ones read, name by name (the layout transformers reads).
  with safe_open(tmp_path / "in" / "model.safetensors", framework="np") as a, \
       safe_open(tmp_path / "out" / "model.safetensors", framework="np") as b:
    assert set(a.keys()) == set(b.keys())
    for name in a.keys():
      np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name))


def test_export_in_bf16_reads_back(tmp_path):
  hf = _hf_config("llama")
  _write(tmp_path / "in", hf, _hf_tensors(hf), dtype=ml_dtypes.bfloat16)
  cfg, params = st.load(tmp_path / "in", param_dtype="bfloat16")
  st.save(tmp_path / "out", cfg, params)
  assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"
  _, params2 = st.load(tmp_path / "out", param_dtype="bfloat16")
  jax.tree.map(np.testing.assert_array_equal, params2, params)


@pytest.mark.parametrize("change, message", [
    (dict(architectures=["GPT2LMHeadModel"]), r"architectures = \['GPT2LMHeadModel'\]; supported"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}),
     r"rope_scaling.rope_type = 'yarn' is not supported"),
    (dict(rope_scaling={"type": "linear", "factor": 4.0}),
     r"rope_scaling.rope_type = 'linear' is not supported"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 4.0}),
     r"rope_scaling.low_freq_factor is missing"),
    (dict(hidden_act="gelu"), r"hidden_act = 'gelu' is not supported"),
    (dict(attention_bias=True), r"attention_bias = True is not supported"),
    (dict(model_type="gpt2"), r"model_type = 'gpt2' for LlamaForCausalLM"),
    (dict(layer_types=["full_attention", "sliding_attention"]), r"layer_types = "),
    (dict(quantization_config={"quant_method": "gptq"}), r"quantization_config \(gptq\)"),
])
def test_unsupported_config_fields_are_named(tmp_path, change, message):
  hf = _hf_config("llama") | change
  _write(tmp_path, hf, _hf_tensors(_hf_config("llama")))
  with pytest.raises(st.SafetensorsError, match=message):
    st.load(tmp_path)


def test_qwen2_sliding_window_and_mistral_window_are_named(tmp_path):
  with pytest.raises(st.SafetensorsError, match=r"use_sliding_window = True is not supported"):
    st.model_config(_hf_config("qwen2", use_sliding_window=True))
  cfg = st.model_config(_hf_config("mistral", sliding_window=32))
  assert cfg.max_len == 32  # exact within the window
  with pytest.raises(st.SafetensorsError, match=r"sliding_window = 32 < max_len = 48"):
    st.model_config(_hf_config("mistral", sliding_window=32), max_len=48)


def test_missing_unexpected_misshapen_and_foreign_tensors_are_named(tmp_path):
  hf = _hf_config("llama")
  tensors = _hf_tensors(hf)
  def load_with(tensors, **kw):
    directory = tmp_path / str(len(list(tmp_path.iterdir())))
    _write(directory, hf, tensors, **kw)
    return st.load(directory)
  with pytest.raises(st.SafetensorsError, match=r"tensor 'model.layers.1.mlp.up_proj.weight' "
                                                r"is missing"):
    load_with({k: v for k, v in tensors.items() if k != "model.layers.1.mlp.up_proj.weight"})
  with pytest.raises(st.SafetensorsError,
                     match=r"unexpected tensor 'model.layers.0.self_attn.q_proj.bias'"):
    load_with(tensors | {"model.layers.0.self_attn.q_proj.bias": np.zeros(N * H, np.float32)})
  with pytest.raises(st.SafetensorsError, match=r"tensor 'model.layers.0.self_attn.k_proj.weight' "
                                                r"has shape \[8, 32\].*layers/attention/key"):
    load_with(tensors | {"model.layers.0.self_attn.k_proj.weight": np.zeros((8, D), np.float32)})
  with pytest.raises(st.SafetensorsError, match=r"'model.norm.weight' is stored as I32"):
    load_with(tensors | {"model.norm.weight": np.ones(D, np.int32)}, dtype=None)
  # Old checkpoints carry rope buffers: ignored.
  load_with(tensors | {"model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(H // 2, np.float32)})


def test_tied_checkpoint_with_a_different_lm_head_is_named(tmp_path):
  hf = _hf_config("llama", tied=True)
  tensors = _hf_tensors(hf)
  _write(tmp_path / "same", hf, tensors | {"lm_head.weight": tensors["model.embed_tokens.weight"]})
  st.load(tmp_path / "same")
  _write(tmp_path / "other", hf, tensors | {"lm_head.weight": np.zeros((V, D), np.float32)})
  with pytest.raises(st.SafetensorsError, match=r"'lm_head.weight' differs from the embeddings"):
    st.load(tmp_path / "other")


def test_missing_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"config not found: .*config.json"):
    st.load(tmp_path)
  hf = _hf_config("llama")
  _write(tmp_path, hf, _hf_tensors(hf), shards=2)
  (tmp_path / st.INDEX).rename(tmp_path / "index.bak")
  with pytest.raises(FileNotFoundError, match=r"found \['model-00001-of-00002.safetensors', "
                                              r".*shards need the index"):
    st.load(tmp_path)
  (tmp_path / "index.bak").rename(tmp_path / st.INDEX)
  (tmp_path / "model-00002-of-00002.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match=r"lists model-00002-of-00002.safetensors"):
    st.load(tmp_path)


def test_export_of_what_a_family_cannot_hold_is_named():
  hf = _hf_config("llama")
  cfg = st.model_config(hf)
  with pytest.raises(st.SafetensorsError, match=r"model.qkv_bias = False cannot be written as "
                                                r"Qwen2ForCausalLM"):
    st.hf_config(cfg, "Qwen2ForCausalLM")
  with pytest.raises(st.SafetensorsError, match=r"model.scale_embeddings = True"):
    st.hf_config(dataclasses.replace(cfg, scale_embeddings=True))


def test_model_config_rope_scaling_is_checked_and_read_back_from_json():
  cfg = st.model_config(_hf_config("llama", rope_scaling=LLAMA3))
  again = type(cfg).from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
  assert again == cfg and hash(again) == hash(cfg)  # a list from JSON becomes the tuple
  with pytest.raises(ValueError, match=r"model.rope_scaling must be None or \(factor"):
    dataclasses.replace(cfg, rope_scaling=(8.0, 4.0, 1.0, 16))  # low >= high


@pytest.mark.parametrize("case", ["llama_mqa_llama3_scaling", "qwen2_biases_tied"])
def test_cached_decode_equals_the_full_forward(tmp_path, case):
  """Biases and scaled rope on the cache path too: prefill 8 tokens, then decode one by one."""
  hf = _hf_config(**CASES[case])
  _write(tmp_path, hf, _hf_tensors(hf))
  cfg, params = st.load(tmp_path)
  model, tokens_1xT = Transformer(cfg), jnp.asarray(TOKENS_T)[None]
  full_TxV = _ours(cfg, params)
  cache = KVCache.zeros(cfg, 1, len(TOKENS_T))
  logits_1xV, cache = model.apply({"params": params}, tokens_1xT[:, :8], cache=cache,
                                  output="last_logits")
  steps = [logits_1xV[0]]
  for t in range(8, len(TOKENS_T)):
    access = causal_access(t, 1, 1, cache.num_slots)
    logits_1xV, cache = model.apply({"params": params}, tokens_1xT[:, t:t + 1], cache=cache,
                                    cache_access=access, output="last_logits")
    steps.append(logits_1xV[0])
  np.testing.assert_allclose(np.stack(steps), full_TxV[7:], atol=1e-5)


def test_export_in_shards_reads_back_and_replaces_a_stale_index(tmp_path):
  hf = _hf_config("qwen2", tied=True)
  _write(tmp_path / "in", hf, _hf_tensors(hf))
  cfg, params = st.load(tmp_path / "in")
  st.save(tmp_path / "out", cfg, params, max_shard_bytes=4096)
  index = json.loads((tmp_path / "out" / st.INDEX).read_text())["weight_map"]
  files = sorted(set(index.values()))
  assert len(files) > 3 and files[-1] == f"model-{len(files):05d}-of-{len(files):05d}.safetensors"
  for file in files:  # each shard within the limit, or one tensor alone
    with safe_open(tmp_path / "out" / file, framework="np") as f:
      sizes = [f.get_tensor(name).nbytes for name in f.keys()]
      assert sum(sizes) <= 4096 or len(sizes) == 1
  _, params2 = st.load(tmp_path / "out")
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  st.save(tmp_path / "out", cfg, params)  # one file now: the index must not outlive the shards
  assert not (tmp_path / "out" / st.INDEX).exists()
  _, params3 = st.load(tmp_path / "out")
  jax.tree.map(np.testing.assert_array_equal, params3, params)


def test_a_gguf_model_exports_and_reads_back_exactly(tmp_path):
  """A Llama read from GGUF (tests/tiny_llama_gguf.py) written as safetensors and read back."""
  gguf_cfg, gguf_params = gguf.load(tiny_llama_gguf.write(tmp_path / "tiny.gguf"))
  st.save(tmp_path / "hf", gguf_cfg, gguf_params)
  cfg, params = st.load(tmp_path / "hf")
  assert cfg == gguf_cfg
  jax.tree.map(np.testing.assert_array_equal, params, gguf_params)
