"""A SentencePiece BPE tokenizer trained locally, and a picklable wrapper for it."""

import dataclasses
import functools
import io
import os
import pathlib
import time
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm
from absl import logging

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
# 256 byte-fallback pieces, 4 special pieces and "\n", plus room for the corpus's
# frequent characters (321 pieces are required for Shakespeare).
MIN_VOCAB_SIZE = 384

# Lossless and deterministic: no normalization or whitespace cleanup, unseen characters
# fall back to bytes, sentences are read in order (no sampling) and "\n" is one piece.
_TRAINER_ARGS = dict(
    model_type="bpe",  # 30x faster to train than unigram on these long examples.
    byte_fallback=True,
    character_coverage=0.9995,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,
    user_defined_symbols=["\n"],
    max_sentence_length=1 << 16,  # Bytes; an example is one "sentence".
    shuffle_input_sentence=False,
    pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
    minloglevel=2,
)


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """SentencePiece model held as its serialized proto, so it pickles into grain workers."""

  model_proto: bytes = dataclasses.field(repr=False)

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Tokenizer":
    return cls(pathlib.Path(path).read_bytes())

  @functools.cached_property
  def _sp(self) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=self.model_proto)

  def __getstate__(self):
    return {"model_proto": self.model_proto}  # The processor itself is not picklable.

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Decodes ids; pad, BOS and EOS decode to nothing."""
    return self._sp.decode(np.asarray(ids, np.int64).tolist())

  @property
  def vocab_size(self) -> int:
    return self._sp.vocab_size()

  @property
  def pad_id(self) -> int:
    return self._sp.pad_id()

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()


def train(texts: Iterable[str], vocab_size: int) -> Tokenizer:
  """Trains a BPE model on `texts`, each text one training "sentence"."""
  if vocab_size < MIN_VOCAB_SIZE:
    raise ValueError(f"vocab_size must be >= {MIN_VOCAB_SIZE}, got {vocab_size}")
  model = io.BytesIO()
  start = time.perf_counter()
  try:
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model,
                                   vocab_size=vocab_size, **_TRAINER_ARGS)
  except RuntimeError as e:  # E.g. more distinct characters than vocab_size allows.
    raise ValueError(f"SentencePiece training failed for vocab_size={vocab_size}: {e}") from e
  logging.info("Trained a %d-piece tokenizer in %.1f s.", vocab_size, time.perf_counter() - start)
  return Tokenizer(model.getvalue())


def train_or_load(path: str | os.PathLike, texts: Iterable[str], vocab_size: int) -> Tokenizer:
  """Loads the model at `path`, or trains it on `texts` and saves it there."""
  path = pathlib.Path(path)
  if path.exists():
    tokenizer = Tokenizer.load(path)
    if tokenizer.vocab_size != vocab_size:
      raise ValueError(f"{path} has {tokenizer.vocab_size} pieces, expected {vocab_size}")
    return tokenizer
  tokenizer = train(texts, vocab_size)
  path.parent.mkdir(parents=True, exist_ok=True)
  # Write then rename, so a crash or a concurrent host never leaves half a model.
  tmp = path.with_suffix(f".tmp{os.getpid()}")
  tmp.write_bytes(tokenizer.model_proto)
  tmp.replace(path)
  return tokenizer
