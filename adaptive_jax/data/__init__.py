"""Data: tfds builders, a local SentencePiece tokenizer, grain pipelines (no TensorFlow)."""

from adaptive_jax.data.pipeline import DataConfig
from adaptive_jax.data.pipeline import first_sequences
from adaptive_jax.data.pipeline import make_eval_batches
from adaptive_jax.data.pipeline import make_train_iterator
from adaptive_jax.data.pipeline import prepare
from adaptive_jax.data.pipeline import prepare_dataset
from adaptive_jax.data.tokenizer import Tokenizer

__all__ = ["DataConfig", "Tokenizer", "prepare", "prepare_dataset", "make_train_iterator",
           "make_eval_batches", "first_sequences"]
