"""Perplexity and bits per byte of held-out documents, comparable across tokenizers.

Per-token perplexity depends on the tokenizer (a coarser one has fewer, harder tokens); bits
per byte does not: the summed negative log-likelihood of a document's tokens is a code length
for its bytes whichever lossless tokenizer cut them. The documents are scored as one stream,
each opened by the model's end-of-document token as context,

  stream   sep a b sep b a        (documents "ab" and "ba", one token per character)
  window 2 [sep a] -> [a b]   [b sep] -> [sep b]   [b pad] -> [a pad]

cut into windows of `window` inputs whose targets do not overlap, so every token after the first
is predicted once, with 0 to window - 1 tokens of context inside its window. Separator and pad
targets are left out (here 4 of 6 targets count): only the documents' own tokens are scored,
over the documents' UTF-8 bytes.

Letters here: B windows (rows), T tokens per window.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.perplexity import perplexity


@dataclasses.dataclass(frozen=True)
class TextScore:
  """The summed NLL of `num_tokens` tokens that spell `num_bytes` bytes."""
  nll_nats: float
  num_tokens: int
  num_bytes: int

  @property
  def perplexity(self) -> float:
    return perplexity(self.nll_nats, self.num_tokens)

  @property
  def bits_per_byte(self) -> float:
    return self.nll_nats / math.log(2) / self.num_bytes

  def as_dict(self) -> dict:
    return {"num_tokens": self.num_tokens, "num_bytes": self.num_bytes,
            "nll_nats": self.nll_nats, "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte}


def token_logprobs(logits_BxTxV, targets_BxT):
  """log p(target) in nats, [B, T], in float32 whatever the logits' dtype."""
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]


def document_stream(documents_ids: Sequence[Sequence[int]], separator_id: int):
  """(stream_N, scored_N): each document's ids after one separator; True on document tokens."""
  stream, scored = [], []
  for ids in documents_ids:
    stream += [separator_id, *ids]
    scored += [False] + [True] * len(ids)
  return np.asarray(stream, np.int32), np.asarray(scored, bool)


def windows(stream_N, scored_N, window: int, rows_multiple: int = 1):
  """(inputs_BxT, targets_BxT, mask_BxT) with T = window; B padded to a multiple of rows_multiple.

  Targets do not overlap; the last window is zero-padded and padding is masked out.
  """
  if window < 1 or rows_multiple < 1:
    raise ValueError(f"window and rows_multiple must be >= 1, got {window}, {rows_multiple}")
  n = len(stream_N) - 1  # targets
  rows = -(-max(n, 1) // window)
  rows = -(-rows // rows_multiple) * rows_multiple
  inputs, targets, mask = (np.zeros(rows * window, d) for d in (np.int32, np.int32, bool))
  inputs[:n], targets[:n], mask[:n] = stream_N[:-1], stream_N[1:], scored_N[1:]
  return tuple(a.reshape(rows, window) for a in (inputs, targets, mask))


def check_round_trip(tokenizer, documents: Sequence[str], name: str) -> None:
  """ValueError unless decode(encode(d)) == d for every document: else bytes are not coded."""
  for i, text in enumerate(documents):
    if tokenizer.decode(tokenizer.encode(text)) != text:
      raise ValueError(f"the {name} tokenizer does not round-trip document {i} ({text[:60]!r}"
                       f"...), so its NLL is not a code length for the document's bytes")


def score_documents(documents: Sequence[str], tokenizer, separator_id: int,
                    logprob_fn: Callable, window: int, rows_per_call: int = 1,
                    name: str = "model") -> TextScore:
  """NLL of the documents' tokens in windows of `window`; bytes are the documents' UTF-8 bytes.

  logprob_fn(inputs_BxT, targets_BxT) -> log p(target) [B, T] in nats, called on
  `rows_per_call` windows at a time (one compiled shape).
  """
  check_round_trip(tokenizer, documents, name)
  stream_N, scored_N = document_stream([tokenizer.encode(d) for d in documents], separator_id)
  inputs_BxT, targets_BxT, mask_BxT = windows(stream_N, scored_N, window, rows_per_call)
  nll = 0.0
  for i in range(0, inputs_BxT.shape[0], rows_per_call):
    rows = slice(i, i + rows_per_call)
    logp_BxT = np.asarray(logprob_fn(inputs_BxT[rows], targets_BxT[rows]), np.float64)
    nll -= float(np.where(mask_BxT[rows], logp_BxT, 0.0).sum())
  return TextScore(nll, int(mask_BxT.sum()), sum(len(d.encode("utf-8")) for d in documents))
