"""Task problems as packed next-token batches through grain (checkpointable, seeded).

Every problem is one segment: BOS (the tokenizer's EOS, as the sampler's prompts start), the
question, the gold solution, EOS. Segments are packed first-fit into rows of seq_len + 1
tokens and never split; attention stays inside a segment (`segment_ids`), positions restart
at 0 in each (`positions`), and the loss covers the targets that `weights` marks: the
solution and its EOS, or the question too with `loss_on_question`. Example, seq_len + 1 = 8,
two segments of 4 and 3 tokens (B bos, q question, s solution, E eos):

  tokens      B q s E B q E .      segment_ids  1 1 1 1 2 2 2 0
  inputs      B q s E B q E        targets      q s E B q E .
  weights     0 1 1 0 0 1 0        (loss_on_question=False: the solution and its EOS, s and E
                                    of segment 1, E of segment 2; never the next segment's BOS)
"""

import dataclasses

import grain
import numpy as np

from adaptive_jax.policy.prompt import encode_prompt
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from adaptive_jax.tasks.problem import format_completion, format_prompt


@dataclasses.dataclass(frozen=True)
class _Encode(grain.transforms.Map):
  """Problem -> {'tokens', 'loss'}: int32 ids and 1 on the tokens that are loss targets."""
  tokenizer: ByteTokenizer
  max_tokens: int  # seq_len + 1
  loss_on_question: bool

  def map(self, problem):
    tok = self.tokenizer
    prompt = encode_prompt(tok, format_prompt(problem))
    completion = tok.encode(format_completion(problem)) + [tok.eos_id]
    tokens = np.asarray(prompt + completion, np.int32)
    if len(tokens) > self.max_tokens:
      raise ValueError(
          f"task.seq_len ({self.max_tokens - 1}) is shorter than a training problem of "
          f"difficulty {problem.difficulty} ({len(tokens)} tokens with BOS and EOS): set "
          f"task.seq_len >= {len(tokens) - 1}; problems are never cut")
    loss = np.ones(len(tokens), np.int32)
    loss[0] = 0  # BOS is never a target
    if not self.loss_on_question:
      loss[:len(prompt)] = 0
    return {"tokens": tokens, "loss": loss}


def _shift(batch):
  """Packed rows of seq_len + 1 -> inputs, targets, segment ids, positions, target weights."""
  tokens, segments = batch["tokens"], batch["tokens_segment_ids"]
  same_segment = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] != 0)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
          "segment_ids": segments[:, :-1], "positions": batch["tokens_positions"][:, :-1],
          "weights": (batch["loss"][:, 1:] * same_segment).astype(np.float32)}


def train_iterator(source, tokenizer: ByteTokenizer, *, seq_len: int, batch_size: int,
                   seed: int, loss_on_question: bool = False, process_index: int = 0,
                   process_count: int = 1) -> grain.DatasetIterator:
  """Endless shuffled packed batches of gold solutions from `source` (a task source).

  With several hosts, each reads every `process_count`-th problem and yields
  `batch_size // process_count` rows.
  """
  if not 0 <= process_index < process_count or batch_size % process_count:
    raise ValueError(f"task.batch_size={batch_size} must split over {process_count} "
                     f"processes, and process_index={process_index} be one of them")
  rows = batch_size // process_count
  ds = grain.MapDataset.source(source)[process_index::process_count]
  ds = ds.shuffle(seed=seed).repeat().map(_Encode(tokenizer, seq_len + 1, loss_on_question))
  # One row's worth of bins per batch row: a problem waits for room in one of `rows` bins.
  ds = grain.experimental.FirstFitPackIterDataset(
      ds.to_iter_dataset(), length_struct={"tokens": seq_len + 1, "loss": seq_len + 1},
      num_packing_bins=rows, seed=seed)
  return iter(ds.batch(rows, drop_remainder=True).map(_shift))
