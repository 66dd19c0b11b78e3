"""Task problems as packed next-token batches through grain (checkpointable, seeded)."""

import dataclasses

import grain
import numpy as np

from adaptive_jax.data.pipeline import packed_batches
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from adaptive_jax.tasks.problem import format_completion, format_prompt


@dataclasses.dataclass(frozen=True)
class _Encode(grain.transforms.Map):
  """Problem -> {'tokens': prompt, gold completion, EOS} as int32 ids."""
  tokenizer: ByteTokenizer

  def map(self, problem):
    text = format_prompt(problem) + format_completion(problem)
    return {"tokens": np.asarray(self.tokenizer.encode(text) + [self.tokenizer.eos_id], np.int32)}


def train_iterator(source, tokenizer: ByteTokenizer, *, seq_len: int, batch_size: int,
                   seed: int, process_index: int = 0,
                   process_count: int = 1) -> grain.DatasetIterator:
  """Endless shuffled batches of gold solutions from `source` (a task source).

  With several hosts, each reads every `process_count`-th problem and yields
  `batch_size // process_count` rows.
  """
  if not 0 <= process_index < process_count or batch_size % process_count:
    raise ValueError(f"task.batch_size={batch_size} must split over {process_count} "
                     f"processes, and process_index={process_index} be one of them")
  ds = grain.MapDataset.source(source)[process_index::process_count]
  ds = ds.shuffle(seed=seed).repeat().map(_Encode(tokenizer))
  return iter(packed_batches(ds.to_iter_dataset(), seq_len, batch_size // process_count))

