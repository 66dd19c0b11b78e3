"""tfds array_record -> grain pipelines of packed next-token batches (no TensorFlow)."""

import dataclasses
import itertools
import os
import pathlib
from collections.abc import Iterator

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

# Importing the builders registers them with tfds.
from adaptive_jax.data import python_code, shakespeare
from adaptive_jax.data import tokenizer as tokenizer_lib

_TFDS_NAMES = {"shakespeare": shakespeare.ShakespearePlays.name,
               "python_stdlib": python_code.PythonStdlib.name, "lm1b": "lm1b", "c4": "c4/en"}
HELD_OUT_SPLITS = {"shakespeare": "validation", "python_stdlib": "validation", "lm1b": "test",
                   "c4": "validation"}
# Tokenizer training reads the train split in order up to this many characters.
_TOKENIZER_CHARS = 50_000_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  """Which corpus, tokenizer size and batch shape; `batch_size` is the global batch."""

  name: str = "shakespeare"
  data_dir: str
  vocab_size: int
  seq_len: int
  batch_size: int
  seed: int
  worker_count: int = 0  # grain worker processes; 0 runs the pipeline in this process.
  text_key: str = "text"

  def __post_init__(self):
    if self.name not in _TFDS_NAMES:
      raise ValueError(f"data.name must be one of {tuple(_TFDS_NAMES)}, got {self.name!r}")
    if not self.data_dir:
      raise ValueError(f"data.data_dir must be a directory path, got {self.data_dir!r}")
    # Configs write "~/.cache/..."; neither tfds nor pathlib expand it.
    object.__setattr__(self, "data_dir", os.path.expanduser(self.data_dir))
    if self.vocab_size < tokenizer_lib.MIN_VOCAB_SIZE:
      raise ValueError(f"data.vocab_size must be >= {tokenizer_lib.MIN_VOCAB_SIZE} (256 "
                       f"byte pieces + specials + characters), got {self.vocab_size}")
    for field in ("seq_len", "batch_size"):
      if getattr(self, field) < 1:
        raise ValueError(f"data.{field} must be positive, got {getattr(self, field)}")
    if not 0 <= self.seed < 2**32:
      raise ValueError(f"data.seed must be in [0, 2**32), got {self.seed}")
    if self.worker_count < 0:
      raise ValueError(f"data.worker_count must be >= 0, got {self.worker_count}")
    if not self.text_key:
      raise ValueError("data.text_key must be a feature name, got ''")


def _builder(cfg: DataConfig) -> tfds.core.DatasetBuilder:
  return tfds.builder(_TFDS_NAMES[cfg.name], data_dir=cfg.data_dir, file_format="array_record")


def _texts(source, text_key: str, max_chars: int) -> Iterator[str]:
  """The texts of `source` in order, stopping once `max_chars` characters are read."""
  total = 0
  for i in range(len(source)):
    if total >= max_chars:
      return
    text = source[i][text_key]
    text = text.decode("utf-8") if isinstance(text, bytes) else text
    total += len(text)
    yield text


def prepare_dataset(cfg: DataConfig) -> tfds.core.DatasetBuilder:
  """Builds the dataset under `cfg.data_dir` unless already there; returns its builder."""
  builder = _builder(cfg)
  builder.download_and_prepare()  # Returns at once when the data is already prepared.
  return builder


def prepare(cfg: DataConfig) -> tokenizer_lib.Tokenizer:
  """Builds the dataset under `cfg.data_dir` and trains the tokenizer, unless already there."""
  builder = prepare_dataset(cfg)
  texts = _texts(builder.as_data_source(split="train"), cfg.text_key, _TOKENIZER_CHARS)
  path = pathlib.Path(cfg.data_dir) / f"{cfg.name}_spm{cfg.vocab_size}.model"
  return tokenizer_lib.train_or_load(path, texts, cfg.vocab_size)


@dataclasses.dataclass(frozen=True)
class _Encode(grain.transforms.Map):
  """Example -> {'tokens': int32[n]}: the text's ids, then EOS to mark the document end."""

  tokenizer: tokenizer_lib.Tokenizer
  text_key: str

  def map(self, example):
    text = example[self.text_key]
    text = text.decode("utf-8") if isinstance(text, bytes) else text
    ids = self.tokenizer.encode(text) + [self.tokenizer.eos_id]
    return {"tokens": np.asarray(ids, np.int32)}


def _shift(batch):
  """{'tokens': [B, T+1]} -> next-token inputs and targets, both int32[B, T]."""
  tokens_BxT1 = batch["tokens"]
  return {"inputs": tokens_BxT1[:, :-1], "targets": tokens_BxT1[:, 1:]}


def _is_full(window) -> bool:
  return window["tokens_segment_ids"][-1] != 0  # Segment id 0 marks padding.


def packed_batches(ds: grain.IterDataset, seq_len: int, batch_size: int) -> grain.IterDataset:
  """{'tokens': int32[n]} documents -> {'inputs', 'targets'} int32 [batch_size, seq_len]."""
  # Concatenate documents and cut windows of seq_len + 1 tokens: no padding, except in
  # the last window of a finite split, which is dropped.
  ds = grain.experimental.ConcatThenSplitIterDataset(ds, length_struct={"tokens": seq_len + 1})
  ds = ds.filter(_is_full)
  return ds.batch(batch_size, drop_remainder=True).map(_shift)


def make_train_iterator(cfg: DataConfig, tokenizer: tokenizer_lib.Tokenizer, *,
                        process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """Endless shuffled packed batches; checkpoint the iterator with grain.checkpoint.

  Each epoch is reshuffled from `cfg.seed` and the epoch number. With several hosts, each
  reads every `process_count`-th example and yields `batch_size // process_count` rows.
  """
  if not 0 <= process_index < process_count or cfg.batch_size % process_count:
    raise ValueError(f"data.batch_size={cfg.batch_size} must split over {process_count} "
                     f"processes, and process_index={process_index} be one of them")
  source = _builder(cfg).as_data_source(split="train")
  ds = grain.MapDataset.source(source)[process_index::process_count]
  ds = ds.shuffle(seed=cfg.seed).repeat().map(_Encode(tokenizer, cfg.text_key))
  ds = packed_batches(ds.to_iter_dataset(), cfg.seq_len, cfg.batch_size // process_count)
  if cfg.worker_count:
    # grain reads absl flags when it starts workers; outside absl.app (tests, notebooks)
    # nothing has parsed them, so take the defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count))
  return iter(ds)


def make_eval_batches(cfg: DataConfig, tokenizer: tokenizer_lib.Tokenizer,
                      split: str | None = None, num_batches: int | None = None
                      ) -> list[dict[str, np.ndarray]]:
  """The first `num_batches` packed batches of `split`, in file order (all if None).

  `split` defaults to the dataset's held-out split (`HELD_OUT_SPLITS`).
  """
  split = split or HELD_OUT_SPLITS[cfg.name]
  source = _builder(cfg).as_data_source(split=split)
  ds = grain.MapDataset.source(source).map(_Encode(tokenizer, cfg.text_key))
  batches = list(itertools.islice(
      packed_batches(ds.to_iter_dataset(), cfg.seq_len, cfg.batch_size), num_batches))
  if num_batches is not None and len(batches) < num_batches:
    raise ValueError(
        f"split {split!r} of {cfg.name!r} holds only {len(batches)} batches of "
        f"{cfg.batch_size} x {cfg.seq_len + 1} tokens, fewer than num_batches={num_batches}")
  return batches


def first_sequences(cfg: DataConfig, tokenizer: tokenizer_lib.Tokenizer, domain: str,
                    num: int, seq_len: int, split: str | None = None):
  """The first `num` packed sequences of `domain`'s `split` (None: its held-out split), in file
  order, as (inputs_NxT, targets_NxT): the fixed text the oracle and router studies score."""
  cfg = dataclasses.replace(cfg, name=domain, seq_len=seq_len, batch_size=num)
  prepare_dataset(cfg)
  (batch,) = make_eval_batches(cfg, tokenizer, split=split, num_batches=1)
  return batch["inputs"], batch["targets"]
