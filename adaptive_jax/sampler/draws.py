"""Draw functions for the adaptive loop: live decoding, and replay of a pool drawn beforehand.

Sample n of question q is decoded from `fold_in(fold_in(key, q), n)`, so it is the same
sample whichever round, row or batch draws it. A pool holds every question's first n_max
samples with their token confidences; replaying it gives exactly what live decoding gives,
early stops included (`replay_truncation` applies the decoder's confidence-window rule to
the recorded confidences), at the cost of one decode per sample for all methods together.
"""

import dataclasses
import hashlib
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.sampler import confidence, decode, selection
from adaptive_jax.sampler.adaptive import Draws

# score_fn(scorer_params, tokens_BxT right-padded whole sequences, prompt_len_B, length_B)
#   -> scores_BxC in [0, 1] (the sampler never imports prm: the caller builds this).
ScoreFn = Callable[[object, jax.Array, jax.Array, jax.Array], jax.Array]
# answer_fn(new_tokens_BxM) -> answer_B int32 (selection.NO_ANSWER when none)
AnswerFn = Callable[[jax.Array], jax.Array]


class Prompts(NamedTuple):
  """The questions' prompts, left-padded to one width P (every row lays out the same)."""
  prompt_QxP: jax.Array
  prompt_len_Q: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static jit argument
class LiveDraw:
  """A DrawFn that decodes with the policy and scores with `score_fn`.

  data = {"policy": params, "scorer": params, "prompts": Prompts, "key": key,
  "score_cost": 0 or 1 (whether the method pays for scoring; scores are computed either way)}.
  """
  model_cfg: ModelConfig
  dec: decode.DecodeConfig
  score_fn: ScoreFn
  answer_fn: AnswerFn
  group_window: int  # DeepConf's sliding window for a trace's lowest group confidence

  def sample(self, data, question_B, slot_B, min_confidence_B) -> decode.SampleOutput:
    prompts = data["prompts"]
    key_B = jax.vmap(lambda q, n: jax.random.fold_in(jax.random.fold_in(data["key"], q), n))(
        question_B, slot_B)
    return decode.sample(data["policy"], prompts.prompt_QxP[question_B],
                         prompts.prompt_len_Q[question_B], key_B, min_confidence_B,
                         cfg=self.model_cfg, dec=self.dec)

  def __call__(self, data, question_B, slot_B, valid_B, min_confidence_B) -> Draws:
    out = self.sample(data, question_B, slot_B, min_confidence_B)
    return self.finish(data, question_B, valid_B, out)

  def score(self, scorer, prompts: Prompts, question_B, tokens_BxM, lengths_B):
    """scores_BxC of samples (their new tokens) of questions question_B: score_fn on the
    prompt followed by the sample, right padded."""
    prompt_len_B = prompts.prompt_len_Q[question_B]
    tokens_BxT = right_padded(prompts.prompt_QxP[question_B], prompt_len_B, tokens_BxM,
                              lengths_B, self.dec.pad_id)
    return self.score_fn(scorer, tokens_BxT, prompt_len_B, lengths_B)

  def finish(self, data, question_B, valid_B, out: decode.SampleOutput) -> Draws:
    prompts = data["prompts"]
    prompt_len_B = prompts.prompt_len_Q[question_B]
    kept_B = valid_B & ~out.truncated_B
    # A truncated trace is never scored (a replayed pool could not know its partial scores).
    scores_BxC = jnp.where(kept_B[:, None], self.score(data["scorer"], prompts, question_B,
                                                        out.tokens_BxM, out.lengths_B), 0.0)
    answer_B = jnp.where(kept_B, self.answer_fn(out.tokens_BxM), selection.NO_ANSWER)
    lowest_B = confidence.lowest_group_confidence(out.confidence_BxM, out.lengths_B,
                                                  self.group_window)
    scored_B = jnp.where(kept_B, prompt_len_B + out.lengths_B, 0) * data["score_cost"]
    return Draws(answer_B=answer_B, scores_BxC=scores_BxC, confidence_B=lowest_B,
                 tokens_B=jnp.where(valid_B, out.lengths_B, 0),
                 scored_tokens_B=scored_B.astype(jnp.int32), truncated_B=kept_B != valid_B)


def right_padded(prompt_BxP, prompt_len_B, tokens_BxM, lengths_B, pad_id: int):
  """tokens_BxT (T = P + M): each row's real prompt tokens, then its new tokens, then pads."""
  full_BxT = jnp.concatenate([prompt_BxP, tokens_BxM], axis=1)
  width = full_BxT.shape[1]
  shift_B = prompt_BxP.shape[1] - prompt_len_B
  index_BxT = jnp.minimum(jnp.arange(width)[None, :] + shift_B[:, None], width - 1)
  real_BxT = jnp.arange(width)[None, :] < (prompt_len_B + lengths_B)[:, None]
  return jnp.where(real_BxT, jnp.take_along_axis(full_BxT, index_BxT, axis=1), pad_id)


def replay_truncation(confidence_BxM, lengths_B, stopped_B, min_confidence_B, window: int):
  """(truncated_B, tokens_B): the decoder's early stop on recorded token confidences.

  The decoder stops a sequence after token t (t >= window - 1) when the mean confidence of
  tokens t - window + 1 .. t is below the row's threshold, unless token t ended it anyway
  (stopped_B: the last token is a stop token). window = 0: never.
  """
  if not window:
    return jnp.zeros_like(stopped_B), lengths_B
  num_tokens = confidence_BxM.shape[1]
  w = min(window, num_tokens)
  starts_T = jnp.maximum(jnp.arange(num_tokens) + 1 - w, 0)
  # The same slice-and-sum as the decoder, so the means agree bit for bit.
  window_mean_BxT = jax.vmap(
      lambda s: jnp.sum(jax.lax.dynamic_slice(confidence_BxM, (0, s), (confidence_BxM.shape[0], w)),
                        axis=-1) / w, out_axes=1)(starts_T)
  t_T = jnp.arange(num_tokens)
  last_B = lengths_B - 1 - stopped_B.astype(jnp.int32)  # the last token that can truncate
  low_BxT = ((t_T[None, :] + 1 >= window) & (t_T[None, :] <= last_B[:, None])
             & (window_mean_BxT < min_confidence_B[:, None]))
  truncated_B = low_BxT.any(-1)
  return truncated_B, jnp.where(truncated_B, jnp.argmax(low_BxT, -1) + 1, lengths_B)


class Pool(NamedTuple):
  """The first N samples of every question, as LiveDraw made them with no early stop."""
  answers_QxN: jax.Array  # NO_ANSWER when none
  scores_QxNxC: jax.Array
  confidence_QxNxM: jax.Array  # token confidences
  lengths_QxN: jax.Array
  stopped_QxN: jax.Array  # ended with a stop token (not at the length cap)
  prompt_len_Q: jax.Array
  tokens_QxNxM: jax.Array  # int32 generated tokens, pad_id after the length


@dataclasses.dataclass(frozen=True, eq=False)
class PoolDraw:
  """A DrawFn reading a Pool: data = {"pool": Pool, "score_cost": 0 or 1}."""
  confidence_window: int  # the decoder's early-stop window (LiveDraw.dec.confidence_window)
  group_window: int

  def __call__(self, data, question_B, slot_B, valid_B, min_confidence_B) -> Draws:
    pool = data["pool"]
    slot_B = jnp.minimum(slot_B, pool.answers_QxN.shape[1] - 1)  # padding rows read slot 0..
    take = lambda x: x[question_B, slot_B]
    confidence_BxM, lengths_B = take(pool.confidence_QxNxM), take(pool.lengths_QxN)
    truncated_B, tokens_B = replay_truncation(confidence_BxM, lengths_B, take(pool.stopped_QxN),
                                              min_confidence_B, self.confidence_window)
    # What the decoder records for a truncated trace: its tokens up to the stop, then zeros.
    confidence_BxM = jnp.where(jnp.arange(confidence_BxM.shape[1])[None, :] < tokens_B[:, None],
                               confidence_BxM, 0.0)
    kept_B = valid_B & ~truncated_B
    scored_B = jnp.where(kept_B, pool.prompt_len_Q[question_B] + lengths_B, 0)
    return Draws(
        answer_B=jnp.where(kept_B, take(pool.answers_QxN), selection.NO_ANSWER),
        scores_BxC=jnp.where(kept_B[:, None], take(pool.scores_QxNxC), 0.0),
        confidence_B=confidence.lowest_group_confidence(confidence_BxM, tokens_B,
                                                        self.group_window),
        tokens_B=jnp.where(valid_B, tokens_B, 0),
        scored_tokens_B=(scored_B * data["score_cost"]).astype(jnp.int32),
        truncated_B=valid_B & truncated_B)


def build_pool(live: LiveDraw, data, num_questions: int, n: int, *, rows: int,
               path: str | None = None) -> Pool:
  """Every question's samples 0..n-1, drawn `rows` at a time with no early stop.

  With `path` (an .npz file) the build survives a kill: chunk `start` (pairs start.. of the
  question-major (q, s) list) is written to `path + ".parts/<start>.npz"` once drawn, a rerun
  draws only the chunks not there, and the whole pool is then written to `path` and the parts
  deleted (`pool_store`). Sample (q, s) is a pure function of its key, so a resumed pool
  equals an uninterrupted one. A finished `path` is loaded without drawing. Every file records
  rows, num_questions, n, live.dec, the key, the prompts and digests of the policy's and the
  scorer's params; resuming with others raises a ValueError naming them, except a finished
  pool whose scorer alone differs: its stored samples are rescored (`rescore_pool`) and the
  file rewritten, so a new verifier costs one scoring pass, not a new draw.
  """
  from adaptive_jax.sampler import pool_store  # pool_store imports this module
  if rows < 1 or num_questions < 1 or n < 1:
    raise ValueError(f"rows, num_questions and n must be >= 1, got {rows}, {num_questions}, {n}")
  settings = _build_settings(live, data, num_questions, n, rows) if path else {}
  if path and os.path.exists(path):
    pool, extra = pool_store.load_pool(path)
    pool_store.check_settings(path, extra, {k: v for k, v in settings.items()
                                            if k != "build_scorer"})
    pool_store.remove_parts(path)  # left when a kill came between the final write and this
    if not np.array_equal(extra.get("build_scorer"), settings["build_scorer"]):
      pool = rescore_pool(live, data, pool, rows=rows)
      pool_store.save_pool(path, pool, **settings)
    return pool
  pairs = np.array([(q, s) for q in range(num_questions) for s in range(n)], np.int32)
  parts = pool_store.load_parts(path, settings) if path else {}
  for start in range(0, len(pairs), rows):
    chunk = pairs[start:start + rows]
    if start in parts:
      if len(parts[start]["answers_B"]) != len(chunk):
        raise ValueError(f"{pool_store.parts_dir(path)}/{start}.npz holds "
                         f"{len(parts[start]['answers_B'])} rows, expected {len(chunk)}")
      continue
    parts[start] = draw_pairs(live, data, chunk[:, 0], chunk[:, 1], rows=rows)
    if path:
      pool_store.save_part(path, start, parts[start], settings)
  flat = {name: np.concatenate([parts[s][name] for s in sorted(parts)]) for name in parts[0]}
  whole = lambda name: flat[name].reshape(num_questions, n, *flat[name].shape[1:])
  pool = Pool(answers_QxN=whole("answers_B"), scores_QxNxC=whole("scores_BxC"),
              confidence_QxNxM=whole("confidence_BxM"), lengths_QxN=whole("lengths_B"),
              stopped_QxN=whole("stopped_B"),
              prompt_len_Q=np.asarray(data["prompts"].prompt_len_Q, np.int32),
              tokens_QxNxM=whole("tokens_BxM"))
  if path:
    pool_store.save_pool(path, pool, **settings)
    pool_store.remove_parts(path)
  return pool


def draw_pairs(live: LiveDraw, data, question_P, slot_P, *, rows: int) -> dict[str, np.ndarray]:
  """Samples (question_P[i], slot_P[i]), at most `rows` per decode call, with no early stop:
  host arrays answers_B, scores_BxC, confidence_BxM, lengths_B, stopped_B, tokens_BxM (B = P).

  A call with fewer pairs left than `rows` runs `call_rows` of them (the next power of two),
  so 16 greedy questions decode 16 rows, not `rows`, and the compiled shapes stay few.
  Sample (q, s) is a pure function of its key, so it is the one `build_pool` draws at (q, s).
  """
  pairs = np.stack([np.asarray(question_P, np.int32), np.asarray(slot_P, np.int32)], 1)
  if pairs.ndim != 2 or not len(pairs) or rows < 1:
    raise ValueError(f"need one or more (question, slot) pairs and rows >= 1, got "
                     f"{len(pairs)} pairs and rows={rows}")
  out = []
  for start in range(0, len(pairs), rows):
    chunk = pairs[start:start + rows]
    width = call_rows(len(chunk), rows)
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], width - len(chunk), 0)])
    step = _pool_step(live, data, padded[:, 0], padded[:, 1])
    out.append({name: np.asarray(x)[:len(chunk)] for name, x in step.items()})
  return {name: np.concatenate([o[name] for o in out]) for name in out[0]}


def call_rows(pairs: int, rows: int) -> int:
  """Rows of a decode call for `pairs` samples: `rows`, or fewer where fewer are left (the
  next power of two, at least 8 and at most `rows`)."""
  return min(rows, max(8, decode.power_of_two_rows(pairs)))


def _build_settings(live: LiveDraw, data, num_questions: int, n: int, rows: int) -> dict:
  """What a pool file must have been built with to be resumed: extras named build_<setting>."""
  key = data["key"]
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  prompts = hashlib.sha256()
  for x in data["prompts"]:
    prompts.update(np.asarray(x, np.int32).tobytes())
    prompts.update(str(np.shape(x)).encode())
  # The models that drew and scored: a pool of another policy is never resumed; one of
  # another scorer is rescored.
  def digest(tree):
    h = hashlib.sha256()
    for x in jax.tree.leaves(tree):
      h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
    return np.str_(h.hexdigest())
  return {"build_rows": np.int64(rows), "build_num_questions": np.int64(num_questions),
          "build_n": np.int64(n), "build_decode": np.str_(repr(live.dec)),
          "build_key": np.asarray(key), "build_prompts": np.str_(prompts.hexdigest()),
          "build_policy": digest(data.get("policy")), "build_scorer": digest(data.get("scorer"))}


def rescore_pool(live: LiveDraw, data, pool: Pool, *, rows: int) -> Pool:
  """`pool` with scores_QxNxC recomputed from its stored tokens by live.score_fn on
  data["scorer"], `rows` samples per call: the pool `build_pool` would draw with that scorer
  (a pool's samples depend on the policy and the keys only, and none is truncated)."""
  num_q, n = np.shape(pool.answers_QxN)
  question_P = np.repeat(np.arange(num_q, dtype=np.int32), n)
  tokens_PxM = np.asarray(pool.tokens_QxNxM).reshape(num_q * n, -1)
  lengths_P = np.asarray(pool.lengths_QxN).reshape(-1)
  out = []
  for start in range(0, len(question_P), rows):
    take = np.minimum(np.arange(start, start + rows), len(question_P) - 1)  # one shape
    scores_BxC = _score_step(live, data["scorer"], data["prompts"], question_P[take],
                             tokens_PxM[take], lengths_P[take])
    out.append(np.asarray(scores_BxC)[:len(question_P) - start])
  return pool._replace(scores_QxNxC=np.concatenate(out).reshape(num_q, n, -1))


_score_step = jax.jit(LiveDraw.score, static_argnums=0)


def _pool_rows(live: LiveDraw, data, question_B, slot_B) -> dict[str, jax.Array]:
  valid_B = jnp.ones(question_B.shape, bool)
  out = live.sample(data, question_B, slot_B, jnp.full(question_B.shape, -jnp.inf))
  draws = live.finish(data, question_B, valid_B, out)
  last_B = out.tokens_BxM[jnp.arange(question_B.shape[0]), jnp.maximum(out.lengths_B - 1, 0)]
  stopped_B = jnp.isin(last_B, jnp.asarray(live.dec.stop_tokens, jnp.int32))
  return {"answers_B": draws.answer_B, "scores_BxC": draws.scores_BxC,
          "confidence_BxM": out.confidence_BxM, "lengths_B": out.lengths_B,
          "stopped_B": stopped_B, "tokens_BxM": out.tokens_BxM.astype(jnp.int32)}


# Module level, so its compilations are kept across builds with the same LiveDraw.
_pool_step = jax.jit(_pool_rows, static_argnums=0)
