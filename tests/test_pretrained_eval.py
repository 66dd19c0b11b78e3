"""Bits per byte and perplexity against hand counts; benchmarks.pretrained's FLOPs too."""

import math

import numpy as np
import pytest

from adaptive_jax.models import text_eval
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.flops import decode_flops_per_token, prefill_flops_per_token
from adaptive_jax.studies.pretrained_study import PretrainedEvalConfig
from adaptive_jax.typed_config import from_mapping
from configs import pretrained_eval

SEP = 0


class CharTokenizer:
  """One token per character, ids 1.. (0 is the separator)."""

  def __init__(self, alphabet):
    self.alphabet = alphabet

  def encode(self, text):
    return [self.alphabet.index(c) + 1 for c in text]

  def decode(self, ids):
    return "".join(self.alphabet[i - 1] for i in ids)


def bigram_logprobs(table_VxV):
  """A fake model whose log p(next | context) depends on the previous token only."""
  return lambda inputs_BxT, targets_BxT: table_VxV[inputs_BxT, targets_BxT]


@pytest.fixture
def table():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 4))
  return logits - np.log(np.exp(logits).sum(1, keepdims=True))  # rows are log-distributions


@pytest.mark.parametrize("window, rows", [(1, 1), (2, 1), (2, 3), (5, 2), (64, 1)])
def test_score_equals_hand_count(table, window, rows):
  # Ids: separator 0, "a" 1, "b" 2, "é" 3 (two UTF-8 bytes). Stream: 0 a b 0 b é a.
  documents = ["ab", "béa"]
  a, b, e = 1, 2, 3
  nll = -(table[SEP, a] + table[a, b] + table[SEP, b] + table[b, e] + table[e, a])
  score = text_eval.score_documents(documents, CharTokenizer("abé"), SEP, bigram_logprobs(table),
                                    window, rows)
  assert (score.num_tokens, score.num_bytes) == (5, 6)
  assert score.nll_nats == pytest.approx(nll)
  assert score.perplexity == pytest.approx(math.exp(nll / 5))
  assert score.bits_per_byte == pytest.approx(nll / math.log(2) / 6)


def test_windows_predict_each_document_token_once_with_its_predecessor():
  stream_N, scored_N = text_eval.document_stream([[5, 6, 7], [8], [9, 10]], SEP)
  np.testing.assert_array_equal(stream_N, [0, 5, 6, 7, 0, 8, 0, 9, 10])
  inputs_BxT, targets_BxT, mask_BxT = text_eval.windows(stream_N, scored_N, 3, rows_multiple=2)
  assert inputs_BxT.shape == (4, 3)  # 8 targets -> 3 windows -> padded to 4 rows
  np.testing.assert_array_equal(targets_BxT[mask_BxT], [5, 6, 7, 8, 9, 10])
  np.testing.assert_array_equal(inputs_BxT[mask_BxT], [0, 5, 6, 0, 0, 9])
  # Window w starts where window w - 1 ended: its first input is the last target before it.
  np.testing.assert_array_equal(inputs_BxT[1:3, 0], targets_BxT[0:2, -1])


class LowercasingTokenizer(CharTokenizer):
  def encode(self, text):
    return super().encode(text.lower())


def test_lossy_tokenizer_is_refused(table):
  with pytest.raises(ValueError, match="round-trip document 1"):
    text_eval.score_documents(["ab", "aB"], LowercasingTokenizer("ab"), SEP,
                              bigram_logprobs(table), 4)


def test_token_logprobs_normalize_the_logits():
  logits_BxTxV = np.log(np.array([[[1.0, 3.0], [2.0, 2.0]]]))
  np.testing.assert_allclose(text_eval.token_logprobs(logits_BxTxV, np.array([[1, 0]])),
                             np.log([[0.75, 0.5]]), rtol=1e-6)


# Grouped-query: 4 query heads read 2 key/value heads of width 8.
GQA = ModelConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                  head_dim=8, d_ff_big=96, d_ff_small=0, max_len=64, duo=False)


def _hand_layers(context):
  # Per layer: q and out 2 * (2*32*32), k and v 2 * (2*32*16), SwiGLU 3 * (2*32*96),
  # scores and values 2 * (2*context*32).
  return 2 * (4096 + 2048 + 18432 + 128 * context)


def test_decode_flops_per_token_hand_count():
  # Prompt 4, 2 decode steps: the fed tokens attend to 5 and 6 keys; logits 2*32*64 each.
  hand = sum(_hand_layers(c) + 4096 for c in (5, 6)) / 2
  assert decode_flops_per_token(GQA, 4, 2) == pytest.approx(hand)


def test_prefill_flops_per_token_hand_count():
  # Prompt 4: token i attends to i + 1 keys; one logits row per sequence.
  hand = (sum(_hand_layers(c) for c in (1, 2, 3, 4)) + 4096) / 4
  assert prefill_flops_per_token(GQA, 4) == pytest.approx(hand)


def test_config_loads_and_bad_fields_are_named():
  config = pretrained_eval.get_config()
  cfg = from_mapping(PretrainedEvalConfig, config.eval, "eval")
  assert cfg.domains == ("shakespeare", "python_stdlib") and len(cfg.questions) == 4
  with pytest.raises(ValueError, match="eval.domains"):
    PretrainedEvalConfig(domains=("wikipedia",))
  with pytest.raises(ValueError, match="eval.windows"):
    PretrainedEvalConfig(windows=(2048, 0))
  assert cfg.weights == ("float32", "int8", "bfloat16")
  with pytest.raises(ValueError, match=r"eval.weights entry must be one of \('float32', "
                                       r"'bfloat16', 'int8'\), got 'int4'"):
    PretrainedEvalConfig(weights=("float32", "int4"))
  with pytest.raises(ValueError, match="eval.weights must start with 'float32'"):
    PretrainedEvalConfig(weights=("int8",))
