"""The GGUF loader and tokenizer on small files written here (no download, no 98 MB package).

A tiny Llama is written the way llama.cpp's converter writes one (torch [out, in] rows, attn_q /
attn_k rows permuted for its adjacent-pair rope, one quantization type per tensor) and must give
the logits of a NumPy Llama in Hugging Face's layout and rotate-half rope.
"""

import pathlib
import re
import sys

import gguf as gguf_lib
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.models import gguf, gguf_tokenizer
from adaptive_jax.nn.transformer import Transformer

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import tiny_llama_gguf  # noqa: E402

V, D, N, K, H, F, L = 64, 64, 4, 2, 16, 96, 2  # row widths D, N*H, F: multiples of 32 (blocks)
THETA, EPS = 500.0, 1e-5


def _permute(w_OxI, heads):
  """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: HF rows -> adjacent-pair rope rows."""
  return (w_OxI.reshape(heads, 2, w_OxI.shape[0] // heads // 2, *w_OxI.shape[1:])
          .swapaxes(1, 2).reshape(w_OxI.shape))


def _hf_weights(seed=0):
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.normal(0, 0.3, shape).astype(np.float32)
  scale = lambda: (1 + 0.2 * rng.normal(size=D)).astype(np.float32)
  layers = [dict(attn_norm=scale(), attn_q=normal(N * H, D), attn_k=normal(K * H, D),
                 attn_v=normal(K * H, D), attn_output=normal(D, N * H), ffn_norm=scale(),
                 ffn_gate=normal(F, D), ffn_up=normal(F, D), ffn_down=normal(D, F))
            for _ in range(L)]
  return dict(token_embd=normal(V, D), output_norm=scale(), output=normal(V, D), layers=layers)


def _write(path, weights, *, arch="llama", types=gguf.SUPPORTED_TYPES, raw_type=None):
  """Writes `weights` as a GGUF file; returns the weights as the file holds them (dequantized).

  Matrices cycle through `types`; `raw_type` writes one tensor as that type's bytes (garbage).
  """
  writer = gguf_lib.GGUFWriter(str(path), arch=arch)
  writer.add_block_count(L)
  writer.add_context_length(128)
  writer.add_embedding_length(D)
  writer.add_feed_forward_length(F)
  writer.add_head_count(N)
  writer.add_head_count_kv(K)
  writer.add_rope_freq_base(THETA)
  writer.add_layer_norm_rms_eps(EPS)
  stored, counter = {}, iter(range(1000))
  def add(name, w, heads=None):
    if w.ndim == 1:
      writer.add_tensor(name, w)
      return w
    qtype = gguf_lib.GGMLQuantizationType[types[next(counter) % len(types)]]
    data = gguf_lib.quants.quantize(w, qtype)  # row by row: commutes with the row permutation
    writer.add_tensor(name, _permute(data, heads) if heads else data,
                      raw_dtype=None if qtype.name in ("F32", "F16") else qtype)
    return gguf_lib.quants.dequantize(data, qtype).astype(np.float64)
  for name in ("token_embd", "output_norm", "output"):
    stored[name] = add(f"{name}.weight", weights[name])
  stored["layers"] = []
  for i, layer in enumerate(weights["layers"]):
    heads = {"attn_q": N, "attn_k": K}
    stored["layers"].append({part: add(f"blk.{i}.{part}.weight", w, heads.get(part))
                             for part, w in layer.items()})
  if raw_type:
    qtype = gguf_lib.GGMLQuantizationType[raw_type]
    block, size = gguf_lib.GGML_QUANT_SIZES[qtype]
    writer.add_tensor("extra.weight", np.zeros((2, size), np.uint8), raw_dtype=qtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return stored


def _hf_llama(w, tokens_T):
  """Hugging Face LlamaForCausalLM in NumPy float64: rotate-half rope, kv heads repeated."""
  rms = lambda x, s: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + EPS) * s
  t = len(tokens_T)
  inv_freq = THETA ** (-np.arange(0, H, 2) / H)
  angle = np.arange(t)[:, None, None] * np.concatenate([inv_freq, inv_freq])  # [T, 1, H]
  rotate_half = lambda x: np.concatenate([-x[..., H // 2:], x[..., :H // 2]], -1)
  rope = lambda x: x * np.cos(angle) + rotate_half(x) * np.sin(angle)
  x = w["token_embd"][tokens_T]
  for lw in w["layers"]:
    h = rms(x, lw["attn_norm"])
    q = rope((h @ lw["attn_q"].T).reshape(t, N, H))
    k = np.repeat(rope((h @ lw["attn_k"].T).reshape(t, K, H)), N // K, axis=1)
    v = np.repeat((h @ lw["attn_v"].T).reshape(t, K, H), N // K, axis=1)
    scores = np.einsum("tnh,snh->nts", q, k) / np.sqrt(H) + np.triu(np.full((t, t), -np.inf), 1)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    o = np.einsum("nts,snh->tnh", p / p.sum(-1, keepdims=True), v).reshape(t, N * H)
    x = x + o @ lw["attn_output"].T
    h = rms(x, lw["ffn_norm"])
    g = h @ lw["ffn_gate"].T
    x = x + (g / (1 + np.exp(-g)) * (h @ lw["ffn_up"].T)) @ lw["ffn_down"].T
  return rms(x, w["output_norm"]) @ w["output"].T


def test_written_llama_loads_to_the_hugging_face_logits(tmp_path):
  path = tmp_path / "tiny.gguf"
  stored = _write(path, _hf_weights())
  cfg, params = gguf.load(path)
  assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.d_ff_big,
          cfg.vocab_size, cfg.max_len) == (L, D, N, K, H, F, V, 128)
  assert cfg.rope_theta == THETA and not cfg.tie_embeddings and not cfg.scale_embeddings
  tokens_T = np.array([3, 17, 42, 5, 63, 0, 9, 9, 21, 30])
  ours = Transformer(cfg).apply({"params": params}, jnp.asarray(tokens_T)[None])[0]
  np.testing.assert_allclose(ours, _hf_llama(stored, tokens_T), atol=2e-4, rtol=1e-4)


def test_unpermute_inverts_the_converters_permutation():
  w_OxI = np.arange(2 * 8 * 3).reshape(16, 3)  # 2 heads of 8 rows
  np.testing.assert_array_equal(gguf._unpermute(_permute(w_OxI, 2), 2), w_OxI)
  # One head of 4 rows: the file holds rows [0, 2, 1, 3] (pairs (i, i + H/2) made adjacent).
  np.testing.assert_array_equal(_permute(np.arange(4)[:, None], 1)[:, 0], [0, 2, 1, 3])


def test_unsupported_quantization_type_is_named(tmp_path):
  path = tmp_path / "q2k.gguf"
  _write(path, _hf_weights(), raw_type="Q2_K")
  with pytest.raises(gguf.GGUFError, match=r"unsupported quantization type Q2_K \(tensor "
                                           r"'extra.weight'.*supported: F32, F16, BF16, Q8_0"):
    gguf.load(path)


def test_unknown_architecture_is_named(tmp_path):
  path = tmp_path / "gpt2.gguf"
  _write(path, _hf_weights(), arch="gpt2", types=("F32",))
  with pytest.raises(gguf.GGUFError, match=r"unknown architecture 'gpt2' \(general.architecture"
                                           r"\); this loader reads 'llama' only"):
    gguf.load(path)


def test_rope_base_and_kv_heads_are_read_from_the_file(tmp_path):
  path = tiny_llama_gguf.write(tmp_path / "tiny.gguf", num_heads=4, num_kv_heads=1,
                               rope_freq_base=123_456.0)
  cfg = gguf.model_config(gguf.read(path))
  assert (cfg.rope_theta, cfg.num_heads, cfg.num_kv_heads) == (123_456.0, 4, 1)


@pytest.mark.parametrize("kwargs, key", [
    (dict(rope_freq_base=None), "llama.rope.freq_base"),
    (dict(write_head_count_kv=False), "llama.attention.head_count_kv"),
])
def test_missing_rope_base_or_kv_heads_raise_naming_the_key(tmp_path, kwargs, key):
  path = tiny_llama_gguf.write(tmp_path / "tiny.gguf", **kwargs)
  with pytest.raises(gguf.GGUFError, match=f"metadata key '{re.escape(key)}' is missing"):
    gguf.model_config(gguf.read(path))


@pytest.mark.parametrize("scaling, message", [
    ({"type": "linear", "factor": 4.0}, r"llama.rope.scaling.type = 'linear'; .* only 'none'"),
    ({"type": "yarn"}, r"llama.rope.scaling.type = 'yarn'"),
    ({"factor": 2.0}, r"llama.rope.scaling.factor = 2.0; .*no scaling"),  # llama.cpp scales
])
def test_rope_scaling_raises_naming_the_key(tmp_path, scaling, message):
  path = tiny_llama_gguf.write(tmp_path / "tiny.gguf", rope_scaling=scaling)
  with pytest.raises(gguf.GGUFError, match=message):
    gguf.load(path)


@pytest.mark.parametrize("scaling", [{"type": "none"}, {"type": "none", "factor": 1.0}])
def test_no_rope_scaling_loads(tmp_path, scaling):
  path = tiny_llama_gguf.write(tmp_path / "tiny.gguf", rope_scaling=scaling)
  assert gguf.model_config(gguf.read(path)).rope_theta == 10_000.0


def test_missing_truncated_and_foreign_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="GGUF file not found: .*absent.gguf"):
    gguf.load(tmp_path / "absent.gguf")
  path = tmp_path / "tiny.gguf"
  _write(path, _hf_weights(), types=("F32",))
  data = path.read_bytes()
  for cut in (len(data) // 2, len(data) - 10, 100, 2):
    (tmp_path / "cut.gguf").write_bytes(data[:cut])
    with pytest.raises(gguf.GGUFError, match=r"cut.gguf is truncated"):
      gguf.load(tmp_path / "cut.gguf")
  (tmp_path / "text.gguf").write_text("hello world")
  with pytest.raises(gguf.GGUFError, match=r"text.gguf is not a GGUF file"):
    gguf.load(tmp_path / "text.gguf")


def _byte_alphabet():
  """GPT-2's printable spelling of the 256 bytes (byte b -> chr), " " -> "Ġ", "\\n" -> "Ċ"."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  extra = iter(range(256, 512))
  return [chr(b if b in printable else next(extra)) for b in range(256)]


def _tokenizer_file(pre="smollm", model="gpt2"):
  tokens = ["<|endoftext|>", *_byte_alphabet(), "12", "Ġw", "Ġwo"]
  return gguf.GGUFFile("fake.gguf", {
      "tokenizer.ggml.model": model, "tokenizer.ggml.pre": pre,
      "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": [3] + [1] * (len(tokens) - 1),
      "tokenizer.ggml.merges": ["1 2", "Ġ w", "Ġw o"], "tokenizer.ggml.bos_token_id": 0,
      "tokenizer.ggml.eos_token_id": 0}, {})


def test_tokenizer_pre_tokenizers_and_special_tokens():
  smollm = gguf_tokenizer.from_gguf(_tokenizer_file("smollm"))
  gpt2 = gguf_tokenizer.from_gguf(_tokenizer_file("gpt2"))
  one, two, twelve, wo = (smollm.token_id(t) for t in ("1", "2", "12", "Ġwo"))
  assert smollm.encode("12") == [one, two] and gpt2.encode("12") == [twelve]  # digits isolated
  assert smollm.encode(" wo") == [wo] == gpt2.encode(" wo")
  assert smollm.encode("<|endoftext|>1") == [0, one]
  text = "naïve 東京 🚀\n\t 12 wo<|endoftext|>"
  assert smollm.decode(smollm.encode(text)) == text
  assert smollm.decode(smollm.encode(text), skip_special=True) == text[:-len("<|endoftext|>")]


def test_tokenizer_unsupported_kinds_are_named():
  with pytest.raises(gguf.GGUFError, match=r"pre-tokenizer 'llama-bpe' .*supported: "):
    gguf_tokenizer.from_gguf(_tokenizer_file(pre="llama-bpe"))
  with pytest.raises(gguf.GGUFError, match=r"tokenizer.ggml.model 'llama' is not supported"):
    gguf_tokenizer.from_gguf(_tokenizer_file(model="llama"))
