"""Batched sampling with a KV cache, the whole decode under one `jax.lax.while_loop`.

Prompts are LEFT-padded to a common length P, so new token t of every sequence goes to cache
slot P + t and the cache is updated with one `dynamic_update_slice` per layer. Sequence b's
real tokens sit in slots [pad_b, P) with pad_b = P - prompt_len_b; its token in slot s has
rotary position s - pad_b (as if unpadded); no query attends to a pad slot. P = 4, M = 3:

  slot          0    1    2    3  | 4    5        (P + M - 1 = 6 slots: the last token is never fed)
  seq 0 (len 4) q    q    q    q  | n0   n1   -> n2
  seq 1 (len 2) pad  pad  q    q  | n0   n1   -> n2     positions 0 1 | 2 3

Batch questions x samples by repeating each prompt (np.repeat(prompt_QxP, N, axis=0)) with one
key per row (jax.random.split(key, Q * N)). The token at position p of sequence b is drawn with
`fold_in(key_b, p)`, so continuing from a prefix the sampler produced, with the same keys, gives
the same tokens as sampling from scratch.

Every step is one call of the model (`Transformer.__call__` with a `KVCache` and the rows'
pad-aware mask, output "last_logits").

A prompt prefix every row shares (few-shot examples) can be run once: `prefill_prefix` gives
its tokens and their keys and values at batch 1, and `start` / `sample` with `prefix_cache`
place them at each row's slots and run only slots L.. (L the prefix length); `sample` checks
that every row starts with the prefix. Rotary positions count from a row's
first real token, so the prefix's keys are the same in every row; only their slots move with
the row's padding. Row b = [pad_b pads][prefix][own tokens], L = 3, P = 6:

  slot          0    1    2  | 3    4    5
  seq 0 (pad 0) x0   x1   x2 | a0   a1   a2     cache[0:3] <- prefix at slots 0..2
  seq 1 (pad 2) pad  pad  x0 | x1   x2   b0     cache[2:3] <- prefix[0:1]; x1, x2 rerun

Letters here: P prompt length, M new tokens, S = P + M - 1 cache slots, N query heads, K
key/value heads, H head width, L shared prefix length.
"""

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.kv_cache import CacheAccess, KVCache
from adaptive_jax.nn.transformer import Transformer, unstack_layers
from adaptive_jax.sampler import categorical
from adaptive_jax.sampler.confidence import token_confidence


@dataclasses.dataclass(frozen=True)
class SamplingPolicy:
  """Temperature (0 = greedy) and nucleus (top-p) sampling of one token per row."""
  temperature: float = 1.0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0 or not 0 < self.top_p <= 1:
      raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self}")

  def choose(self, key_B, logits_BxV):
    """token_B: one draw per row from its own key."""
    if self.temperature == 0:
      return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    logits_BxV = logits_BxV / self.temperature
    if self.top_p < 1:
      logits_BxV = jnp.where(_nucleus(jax.nn.softmax(logits_BxV), self.top_p), logits_BxV,
                             -jnp.inf)
    return categorical.categorical(key_B, logits_BxV)


def _nucleus(probs_BxV, top_p: float, iterations: int = 32):
  """Mask of the smallest most-likely set with mass >= top_p: {p >= c}, c the largest such cut.

  Bisects c instead of sorting: sorting a [128, 512] row block costs ~7 ms on CPU, the 32 masked
  sums ~0.5 ms. The bracket shrinks to float resolution, so the set is the sorted one's unless
  two probabilities tie within ~1e-9 of the cut.
  """
  mass = lambda cut_B: jnp.sum(jnp.where(probs_BxV >= cut_B[:, None], probs_BxV, 0), axis=-1)
  hi_B = jnp.max(probs_BxV, axis=-1)  # mass(lo) >= top_p always; mass(hi) too only if cut = max
  lo_B = jnp.where(mass(hi_B) >= top_p, hi_B, 0.0)

  def halve(_, bracket):
    lo_B, hi_B = bracket
    mid_B = (lo_B + hi_B) / 2
    ok_B = mass(mid_B) >= top_p
    return jnp.where(ok_B, mid_B, lo_B), jnp.where(ok_B, hi_B, mid_B)
  lo_B, _ = jax.lax.fori_loop(0, iterations, halve, (lo_B, hi_B))
  return probs_BxV >= lo_B[:, None]


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  max_new_tokens: int
  policy: SamplingPolicy = SamplingPolicy()
  stop_tokens: tuple[int, ...] = ()  # end of answer (EOS), optionally end of step ("\n")
  pad_id: int = 0  # written after a sequence stops
  route: int | None = None  # Duo models only: the route (routing.Route) every token takes
  # DeepConf's token confidence, -mean log p of the top-k candidates, from the logits the
  # draw already computed (recorded per token; 0 after a stop).
  confidence_top_k: int = 20
  # > 0: a sequence stops early ("truncated") once the mean token confidence of its last
  # `confidence_window` tokens falls below its row of `sample`'s min_confidence_B (DeepConf
  # online). 0: never.
  confidence_window: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if isinstance(self.confidence_top_k, bool) or not isinstance(self.confidence_top_k, int) \
        or self.confidence_top_k < 1:
      raise ValueError(f"confidence_top_k must be an integer >= 1, got {self.confidence_top_k!r}")
    if isinstance(self.confidence_window, bool) or not isinstance(self.confidence_window, int) \
        or self.confidence_window < 0:
      raise ValueError(f"confidence_window must be an integer >= 0 (0: no early stop), got "
                       f"{self.confidence_window!r}")
    object.__setattr__(self, "stop_tokens", tuple(int(t) for t in self.stop_tokens))


class DecodeState(NamedTuple):
  t: jax.Array  # new tokens written so far
  token_B: jax.Array  # the last token written, fed at slot P + t - 1
  done_B: jax.Array  # wrote a stop token
  tokens_BxM: jax.Array  # new tokens; pad_id after a sequence's stop
  logprobs_BxM: jax.Array  # log p(token) under the model (temperature 1, no top-p); 0 after stop
  lengths_B: jax.Array  # new tokens per sequence, stop token included
  confidence_BxM: jax.Array  # token confidence (DecodeConfig.confidence_top_k); 0 after stop
  truncated_B: jax.Array  # stopped early by the confidence window (DeepConf online)
  min_confidence_B: jax.Array  # the early-stop threshold of each row (-inf: none)
  prompt_len_B: jax.Array
  key_B: jax.Array
  cache: KVCache  # every layer's keys and values, S = P + M - 1 slots


class PrefixCache(NamedTuple):
  """A prefix every prompt starts with: its tokens and their keys and values at batch 1."""
  tokens_L: jax.Array
  cache: KVCache


class SampleOutput(NamedTuple):
  tokens_BxM: jax.Array
  lengths_B: jax.Array
  logprobs_BxM: jax.Array
  confidence_BxM: jax.Array
  truncated_B: jax.Array


def power_of_two_rows(num: int) -> int:
  """The smallest power of two >= num: the row buckets of decode calls, so varied batch sizes
  reuse a few compiled decodes."""
  return 1 << (num - 1).bit_length()


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int = 0):
  """(prompt_BxP, prompt_len_B) int32 NumPy arrays; every sequence needs at least one token."""
  if any(len(s) == 0 for s in sequences):
    raise ValueError("every prompt needs at least one token (for example BOS)")
  length = max(len(s) for s in sequences)
  prompt_BxP = np.full((len(sequences), length), pad_id, np.int32)
  for b, s in enumerate(sequences):
    prompt_BxP[b, length - len(s):] = s
  return prompt_BxP, np.array([len(s) for s in sequences], np.int32)


def _forward(cfg: ModelConfig, dec: DecodeConfig, params, tokens_BxT, first_slot, pad_B,
             cache: KVCache):
  """Runs tokens_BxT at slots first_slot.. through the cached model: (last logits_BxV, cache)."""
  batch, num_tokens = tokens_BxT.shape
  slots_T = first_slot + jnp.arange(num_tokens)
  positions_BxT = slots_T[None, :] - pad_B[:, None]
  key_slots_1x1xS = jnp.arange(cache.num_slots)[None, None, :]
  query_slots_1xTx1 = slots_T[None, :, None]
  # Causal, and never a pad slot; a pad query sees itself only (no all-masked softmax rows).
  mask_BxTxS = (key_slots_1x1xS <= query_slots_1xTx1) & (
      (key_slots_1x1xS >= pad_B[:, None, None]) | (key_slots_1x1xS == query_slots_1xTx1))
  route_BxTxL = None
  if cfg.duo:
    route_BxTxL = jnp.full((batch, num_tokens, cfg.num_layers), dec.route, jnp.int32)
  return Transformer(cfg).apply(
      {"params": params}, tokens_BxT, route_BxTxL=route_BxTxL, positions_BxT=positions_BxT,
      cache=cache, cache_access=CacheAccess(jnp.asarray(first_slot, jnp.int32), mask_BxTxS),
      output="last_logits")


def _write(dec: DecodeConfig, state: DecodeState, logits_BxV) -> DecodeState:
  """Draws token t of every running sequence from logits_BxV and records it."""
  keys_B = jax.vmap(jax.random.fold_in)(state.key_B, state.prompt_len_B + state.t)
  token_B = dec.policy.choose(keys_B, logits_BxV)
  logprob_B = jnp.take_along_axis(logits_BxV, token_B[:, None], -1)[:, 0] - \
      jax.nn.logsumexp(logits_BxV, axis=-1)
  token_B = jnp.where(state.done_B, dec.pad_id, token_B)
  logprob_B = jnp.where(state.done_B, 0.0, logprob_B)
  confidence_B = jnp.where(state.done_B, 0.0, token_confidence(
      logits_BxV, min(dec.confidence_top_k, logits_BxV.shape[-1])))
  confidence_BxM = jax.lax.dynamic_update_slice(state.confidence_BxM, confidence_B[:, None],
                                                (0, state.t))
  stopped_B = jnp.isin(token_B, jnp.asarray(dec.stop_tokens, jnp.int32)) if dec.stop_tokens \
      else jnp.zeros_like(state.done_B)
  truncated_B = state.truncated_B
  if dec.confidence_window:
    # The window of tokens t - w + 1 .. t, once t + 1 >= w (start clamped at 0 before that).
    w = min(dec.confidence_window, dec.max_new_tokens)
    window_BxW = jax.lax.dynamic_slice(confidence_BxM, (0, jnp.maximum(state.t + 1 - w, 0)),
                                       (confidence_BxM.shape[0], w))
    low_B = (state.t + 1 >= dec.confidence_window) & (
        jnp.sum(window_BxW, axis=-1) / w < state.min_confidence_B)
    truncated_B = truncated_B | (low_B & ~state.done_B & ~stopped_B)
  return state._replace(
      t=state.t + 1, token_B=token_B, done_B=state.done_B | stopped_B | truncated_B,
      tokens_BxM=jax.lax.dynamic_update_slice(state.tokens_BxM, token_B[:, None], (0, state.t)),
      logprobs_BxM=jax.lax.dynamic_update_slice(state.logprobs_BxM, logprob_B[:, None],
                                                (0, state.t)),
      lengths_B=state.lengths_B + (~state.done_B).astype(jnp.int32),
      confidence_BxM=confidence_BxM, truncated_B=truncated_B)


def prefill_prefix(cfg: ModelConfig, dec: DecodeConfig, params, prefix_L) -> PrefixCache:
  """The keys and values of a prefix that every prompt starts with (unpadded, batch 1)."""
  prefix_1xL = jnp.asarray(prefix_L, jnp.int32)[None]
  cache = KVCache.zeros(cfg, 1, prefix_1xL.shape[1])
  _, cache = _forward(cfg, dec, nn.meta.unbox(params), prefix_1xL, 0, jnp.zeros(1, jnp.int32),
                      cache)
  return PrefixCache(prefix_1xL[0], cache)


def _place_prefix(cache_BxKxSxH, prefix_1xKxLxH, pad_B):
  """Writes the prefix at slots pad_b .. pad_b + L - 1 of each row (slots 0..L-1 hold it or
  pads; the pads get copies of the prefix's first slot, which no query attends to)."""
  length = prefix_1xKxLxH.shape[2]
  source_BxL = jnp.maximum(jnp.arange(length)[None, :] - pad_B[:, None], 0)
  placed_KxBxLxH = jnp.take(prefix_1xKxLxH[0], source_BxL, axis=1)
  return jax.lax.dynamic_update_slice(
      cache_BxKxSxH, jnp.swapaxes(placed_KxBxLxH, 0, 1).astype(cache_BxKxSxH.dtype),
      (0, 0, 0, 0))


def _check_prefix_room(shared: int, prompt_len: int) -> None:
  if shared >= prompt_len:
    raise ValueError(f"a shared prefix of {shared} tokens needs prompts longer than it, "
                     f"got prompt length {prompt_len}")


def check_prefix(prompt_BxP, prompt_len_B, prefix_cache: PrefixCache) -> None:
  """ValueError unless every left-padded prompt starts with the prefix and runs past it."""
  prefix_L = np.asarray(prefix_cache.tokens_L)
  prompt_BxP, prompt_len_B = np.asarray(prompt_BxP), np.asarray(prompt_len_B)
  width, shared = prompt_BxP.shape[1], len(prefix_L)
  _check_prefix_room(shared, width)
  for b, length in enumerate(prompt_len_B):
    row = prompt_BxP[b, width - length:]
    if length <= shared or not np.array_equal(row[:shared], prefix_L):
      raise ValueError(f"prompt row {b} does not start with the {shared}-token shared prefix "
                       f"and continue past it (prefix_cache needs every row to)")


def start(cfg: ModelConfig, dec: DecodeConfig, params, prompt_BxP, prompt_len_B, key_B,
          min_confidence_B=None, prefix_cache=None):
  """Prefills the cache with the left-padded prompts and draws the first new token.

  min_confidence_B: each row's early-stop threshold when dec.confidence_window > 0.
  prefix_cache: `prefill_prefix` of the L tokens every row's prompt starts with; then only
  slots L.. are run. Each row needs at least one token after the prefix (`sample` checks).
  """
  if cfg.duo and dec.route is None:
    raise ValueError("a Duo model needs DecodeConfig.route (a constant routing.Route)")
  if not cfg.duo and dec.route is not None:
    raise ValueError("a dense model (model.duo=False) takes no route")
  if dec.route is not None:
    route = routing.Route(dec.route)  # validates
    fraction = {routing.Route.SMALL: cfg.dispatch_small_fraction,
                routing.Route.BIG: cfg.dispatch_big_fraction}.get(route, 1.0)
    if cfg.ffn_impl == "dispatch" and fraction < 1:
      raise ValueError(f"every token takes route {route.name}, so sparse dispatch would drop "
                       f"tokens: model.dispatch_{route.name.lower()}_fraction must be 1 for "
                       f"decoding, got {fraction}")
  batch, prompt_len = prompt_BxP.shape
  m = dec.max_new_tokens
  if prompt_len + m - 1 > cfg.max_len:
    raise ValueError(f"prompt length {prompt_len} + max_new_tokens {m} - 1 exceeds "
                     f"model.max_len={cfg.max_len}")
  cache = KVCache.zeros(cfg, batch, prompt_len + m - 1)
  prompt_len_B = jnp.asarray(prompt_len_B, jnp.int32)
  pad_B = prompt_len - prompt_len_B
  shared = 0
  if prefix_cache is not None:
    shared = prefix_cache.tokens_L.shape[0]
    _check_prefix_room(shared, prompt_len)
    cache = KVCache(*(tuple(_place_prefix(c, pre, pad_B) for c, pre in zip(caches, prefix))
                      for caches, prefix in zip(cache, prefix_cache.cache)))
  logits_BxV, cache = _forward(cfg, dec, params, prompt_BxP[:, shared:], shared, pad_B, cache)
  state = DecodeState(
      t=jnp.int32(0), token_B=jnp.zeros(batch, jnp.int32), done_B=jnp.zeros(batch, bool),
      tokens_BxM=jnp.full((batch, m), dec.pad_id, jnp.int32),
      logprobs_BxM=jnp.zeros((batch, m), jnp.float32), lengths_B=jnp.zeros(batch, jnp.int32),
      confidence_BxM=jnp.zeros((batch, m), jnp.float32), truncated_B=jnp.zeros(batch, bool),
      min_confidence_B=(jnp.full(batch, -jnp.inf, jnp.float32) if min_confidence_B is None
                        else jnp.asarray(min_confidence_B, jnp.float32)),
      prompt_len_B=prompt_len_B, key_B=key_B, cache=cache)
  return _write(dec, state, logits_BxV)


def advance(cfg: ModelConfig, dec: DecodeConfig, params, state: DecodeState) -> DecodeState:
  """Feeds the last token and draws the next one (stopped sequences write pad_id)."""
  num_slots = state.cache.num_slots
  prompt_len = num_slots - dec.max_new_tokens + 1
  logits_BxV, cache = _forward(cfg, dec, params, state.token_B[:, None],
                               prompt_len + state.t - 1, prompt_len - state.prompt_len_B,
                               state.cache)
  return _write(dec, state._replace(cache=cache), logits_BxV)


def running(dec: DecodeConfig, state: DecodeState):
  return (state.t < dec.max_new_tokens) & ~jnp.all(state.done_B)


def sample(params, prompt_BxP, prompt_len_B, key_B, min_confidence_B=None,
           prefix_cache: PrefixCache | None = None, *, cfg: ModelConfig,
           dec: DecodeConfig) -> SampleOutput:
  """Samples up to dec.max_new_tokens per left-padded prompt; a stopped sequence stops growing.

  params: the Transformer's (unboxed) params; key_B: one key per sequence; min_confidence_B:
  per-row early-stop thresholds (used when dec.confidence_window > 0; default none);
  prefix_cache: `prefill_prefix` of a prefix every prompt starts with (default none; checked
  against the prompts when they are concrete).
  """
  if prefix_cache is not None and not isinstance(prompt_BxP, jax.core.Tracer):
    check_prefix(prompt_BxP, prompt_len_B, prefix_cache)
  return _sample(params, prompt_BxP, prompt_len_B, key_B, min_confidence_B, prefix_cache,
                 cfg=cfg, dec=dec)


@jax.jit(static_argnames=("cfg", "dec"))
def _sample(params, prompt_BxP, prompt_len_B, key_B, min_confidence_B, prefix_cache, *,
            cfg: ModelConfig, dec: DecodeConfig) -> SampleOutput:
  params = unstack_layers(params)  # once per call, not in every step
  state = start(cfg, dec, params, prompt_BxP, prompt_len_B, key_B, min_confidence_B,
                prefix_cache)
  state = jax.lax.while_loop(lambda s: running(dec, s), lambda s: advance(cfg, dec, params, s),
                             state)
  return output(state)


def output(state: DecodeState) -> SampleOutput:
  return SampleOutput(state.tokens_BxM, state.lengths_B, state.logprobs_BxM,
                      state.confidence_BxM, state.truncated_B)


def sample_rows(params, ids: Sequence[Sequence[int]], key, *, cfg: ModelConfig,
                dec: DecodeConfig, filler_id: int, width_multiple: int = 64) -> list[list[int]]:
  """Samples a continuation of each token list: its new tokens, stop token included.

  Shapes come from a few buckets, so calls with varied prompts reuse a few compiled decodes:
  rows to a power of two (filled with [filler_id] rows), prompt width to a multiple of
  `width_multiple`, lowered where the multiple would leave less than dec.max_new_tokens of
  model.max_len. Row b draws with key b of jax.random.split(key, rows).
  """
  if not ids:
    raise ValueError("ids must hold at least one token list")
  longest = max(len(row) for row in ids)
  if longest + dec.max_new_tokens - 1 > cfg.max_len:
    raise ValueError(f"max_new_tokens={dec.max_new_tokens} does not fit after a prompt of "
                     f"{longest} tokens (the longest row): {longest} + "
                     f"{dec.max_new_tokens} - 1 > model.max_len={cfg.max_len}")
  num = len(ids)
  rows = [list(row) for row in ids] + [[filler_id]] * (power_of_two_rows(num) - num)
  prompt_BxP, prompt_len_B = left_pad(rows, dec.pad_id)
  width = max(longest, min(-(-longest // width_multiple) * width_multiple,
                           cfg.max_len - dec.max_new_tokens + 1))
  prompt_BxP = np.pad(prompt_BxP, ((0, 0), (width - longest, 0)), constant_values=dec.pad_id)
  out = sample(params, prompt_BxP, prompt_len_B, jax.random.split(key, len(rows)), cfg=cfg,
               dec=dec)
  tokens_BxM, lengths_B = np.asarray(out.tokens_BxM), np.asarray(out.lengths_B)
  return [tokens_BxM[b, :lengths_B[b]].tolist() for b in range(num)]
