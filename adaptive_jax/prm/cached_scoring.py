"""PRM scores of growing sequences that extend cached prefixes: beam search's `score_fn`.

Beam search scores each candidate once, and a candidate is a scored beam plus one new step.
`PrefixScorer` keeps, per scored sequence, the PRM backbone's keys and values, the sum of its
final-normed hidden states and its length; a new sequence starts from its longest cached
prefix and runs only the tokens after it, `chunk` at a time, through the model's cached call
(`Transformer.__call__` with a `KVCache`, each row written at its own slot). The features are
those of `readout` at the sequence's end: h_last, the new last token's normed state, and
h_mean = (prefix sum + new states) / length. Compiled shapes come from a small fixed set: rows
in multiples of 8 up to `max_rows`, a round's width (its longest remaining run) in multiples
of 8 up to `chunk`, slots a power of two from 64 up to `model.max_len + chunk`. Prefixes that
several new sequences share (a question's prompt, under all of its first-step candidates) run
once, before the sequences.

Example, chunk 32: "Q: 3+4\n" (7 tokens with EOS) is scored from nothing in one round of width
8 (one pad); then "Q: 3+4\n7\n" finds the 7-token prefix and runs 2 tokens (width 8).
"""

import collections
import functools
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.kv_cache import KVCache, causal_access
from adaptive_jax.nn.transformer import unstack_layers
from adaptive_jax.prm.model import PRM
from adaptive_jax.prm.scoring import channels
from adaptive_jax.typed_config import check_int


class _Entry(NamedTuple):
  k_LxKxSxH: np.ndarray  # the sequence's keys at slots 0..length-1 of every layer
  v_LxKxSxH: np.ndarray
  sum_D: np.ndarray  # sum of the final-normed hidden states of its tokens (float32)
  probs_K: np.ndarray  # its scores


@functools.partial(jax.jit, static_argnames=("cfg", "num_quantiles"))
def _extend(params, cache: KVCache, sum_BxD, length_B, tokens_BxC, new_B, *, cfg: ModelConfig,
            num_quantiles: int):
  """Runs new_B (<= C) real tokens of each row after its length_B cached ones:
  (cache, sum_BxD, probs_BxK at the new end)."""
  batch, chunk = tokens_BxC.shape
  module = PRM(cfg, num_quantiles)
  access = causal_access(length_B, batch, chunk, cache.num_slots)
  h_BxCxD, cache = module.apply({"params": params}, tokens_BxC, cache=cache, cache_access=access,
                                output="hidden", method=lambda m, *a, **k: m.backbone(*a, **k))
  h_BxCxD = h_BxCxD.astype(jnp.float32)
  real_BxC = jnp.arange(chunk)[None, :] < new_B[:, None]
  sum_BxD = sum_BxD + jnp.sum(jnp.where(real_BxC[..., None], h_BxCxD, 0.0), axis=1)
  last_BxD = h_BxCxD[jnp.arange(batch), jnp.maximum(new_B - 1, 0)]
  mean_BxD = sum_BxD / jnp.maximum(length_B + new_B, 1)[:, None].astype(jnp.float32)
  probs_BxK = module.apply({"params": params}, jnp.concatenate([last_BxD, mean_BxD], -1),
                           method=channels)
  return cache, sum_BxD, probs_BxK


class PrefixScorer:
  """score(sequences) -> probs_NxK at each sequence's last token, the columns of
  `scoring.position_probabilities` there; sequences are token lists that start with the PRM's
  EOS, as `encode_texts` writes them. Cached keys and values are kept up to `max_bytes`, least
  recently used dropped first."""

  def __init__(self, params, cfg: ModelConfig, num_quantiles: int, *, chunk: int = 32,
               max_rows: int = 64, max_bytes: int = 2 << 30):
    for name, value in (("chunk", chunk), ("max_rows", max_rows), ("max_bytes", max_bytes)):
      check_int("prefix_scorer", name, value)
    # Every call runs the cached backbone: its layers split once here, not copied out of the
    # stack in each call (transformer.unstack_layers).
    params = nn.meta.unbox(params)
    self.params = {**params, "backbone": unstack_layers(params["backbone"])}
    self.cfg, self.num_quantiles = cfg, num_quantiles
    self.chunk, self.max_rows, self.max_bytes = chunk, max_rows, max_bytes
    self._bytes = 0
    self._entries: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()
    self.tokens_run = 0  # tokens through the model, padding included: the cost
    self.tokens_real = 0  # tokens that were not in a cached prefix

  def _longest_prefix(self, seq: tuple) -> tuple:
    lengths = sorted({len(k) for k in self._entries if len(k) <= len(seq)}, reverse=True)
    for length in lengths:
      if seq[:length] in self._entries:
        self._entries.move_to_end(seq[:length])
        return seq[:length]
    return ()

  def __call__(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
    seqs = [tuple(int(t) for t in s) for s in sequences]
    for i, s in enumerate(seqs):
      if not 0 < len(s) <= self.cfg.max_len:
        raise ValueError(f"sequence {i} has {len(s)} tokens; the PRM scores 1 to "
                         f"model.max_len={self.cfg.max_len}")
    todo = list(dict.fromkeys(s for s in seqs if s not in self._entries))
    # Prefixes that two or more new sequences share beyond their cached ones (a question's
    # prompt, at the first step) run once, first.
    shared = self._shared_prefixes(todo)
    for batch in (shared, todo):
      batch = [s for s in batch if s not in self._entries]  # a shared prefix may be asked too
      for start in range(0, len(batch), self.max_rows):
        self._score_rows(batch[start:start + self.max_rows])
    return np.stack([self._entries[s].probs_K for s in seqs])

  def _shared_prefixes(self, seqs: list[tuple]) -> list[tuple]:
    """The longest common prefix of each pair of neighbours in sorted order, where it is at
    least a chunk longer than what the cache already holds of it."""
    ordered = sorted(seqs)
    shared = set()
    for a, b in zip(ordered, ordered[1:]):
      n = 0
      while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
      prefix = a[:n]
      if n and prefix not in self._entries and n - len(self._longest_prefix(prefix)) >= self.chunk:
        shared.add(prefix)
    return sorted(shared, key=len)

  def _score_rows(self, seqs: list[tuple]) -> None:
    """Scores sequences that are not cached whole (each has at least one token to run)."""
    # Slots: the longest sequence plus room for a chunk, a power of two from 64 (a few shapes
    # at any max_len: 6 up to 2048).
    cfg = self.cfg
    slots = max(64, 1 << (max(map(len, seqs)) + self.chunk - 1).bit_length())
    rows = -(-len(seqs) // 8) * 8
    prefixes = [self._longest_prefix(s) for s in seqs]
    shape = (cfg.num_layers, rows, cfg.kv_heads, slots, cfg.head_dim)
    k = np.zeros(shape, np.dtype(cfg.activation_dtype))
    v = np.zeros(shape, np.dtype(cfg.activation_dtype))
    sum_BxD = np.zeros((rows, cfg.d_model), np.float32)
    for b, prefix in enumerate(prefixes):
      if prefix:
        entry = self._entries[prefix]
        k[:, b, :, :len(prefix)] = entry.k_LxKxSxH
        v[:, b, :, :len(prefix)] = entry.v_LxKxSxH
        sum_BxD[b] = entry.sum_D
    cache = KVCache(tuple(jnp.asarray(k[l]) for l in range(cfg.num_layers)),
                    tuple(jnp.asarray(v[l]) for l in range(cfg.num_layers)))
    sum_BxD = jnp.asarray(sum_BxD)
    length_B = np.zeros(rows, np.int32)
    length_B[:len(seqs)] = [len(p) for p in prefixes]
    end_B = length_B.copy()
    end_B[:len(seqs)] = [len(s) for s in seqs]
    probs_BxK = None  # every row has a token to run (none is cached whole), so set in round 1
    while np.any(length_B < end_B):
      # This round's width: the longest remaining run, in multiples of 8, at most a chunk.
      width = min(self.chunk, -(-int(np.max(end_B - length_B)) // 8) * 8)
      new_B = np.minimum(end_B - length_B, width).astype(np.int32)
      tokens_BxC = np.zeros((rows, width), np.int32)
      for b, s in enumerate(seqs):
        tokens_BxC[b, :new_B[b]] = s[length_B[b]:length_B[b] + new_B[b]]
      # A row at its end runs pads past it: masked out of its sum and its scores, written to
      # slots after its length, which nothing reads (and `slots` leaves room for a chunk).
      cache, sum_BxD, step_probs_BxK = _extend(
          self.params, cache, sum_BxD, jnp.asarray(length_B), jnp.asarray(tokens_BxC),
          jnp.asarray(new_B), cfg=cfg, num_quantiles=self.num_quantiles)
      probs_BxK = step_probs_BxK if probs_BxK is None else jnp.where(
          (new_B > 0)[:, None], step_probs_BxK, probs_BxK)
      self.tokens_run += rows * width
      self.tokens_real += int(new_B.sum())
      length_B = length_B + new_B
    k_cache, v_cache = (np.stack([np.asarray(a) for a in part]) for part in cache)
    sum_BxD, probs_BxK = np.asarray(sum_BxD), np.asarray(probs_BxK)
    for b, s in enumerate(seqs):
      entry = _Entry(k_cache[:, b, :, :len(s)].copy(), v_cache[:, b, :, :len(s)].copy(),
                     sum_BxD[b], probs_BxK[b])
      self._entries[s] = entry
      self._bytes += entry.k_LxKxSxH.nbytes * 2
    # Least recently used first; a sequence whose prefix is gone is scored from its start.
    while self._bytes > self.max_bytes and len(self._entries) > 1:
      _, old = self._entries.popitem(last=False)
      self._bytes -= old.k_LxKxSxH.nbytes * 2
