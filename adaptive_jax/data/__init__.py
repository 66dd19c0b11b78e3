"""Data: tfds builders, a local SentencePiece tokenizer, grain pipelines (no TensorFlow)."""

from adaptive_jax.data.pipeline import (
  DataConfig,
  first_sequences,
  make_eval_batches,
  make_train_iterator,
  prepare,
  prepare_dataset,
)
from adaptive_jax.data.tokenizer import Tokenizer

__all__ = ["DataConfig", "Tokenizer", "prepare", "prepare_dataset", "make_train_iterator",
           "make_eval_batches", "first_sequences"]
