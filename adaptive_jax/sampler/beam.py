"""Step-level beam search guided by a process reward model (PRM), with adaptive widths (IAS).

Host-driven over steps; each step makes ONE `expand_fn` call that draws the next step of every
question's live beams together, and ONE `score_fn` call on the candidates not scored before.
The procedure is that of the calibrated-PRM paper's code (young-j-park/prm-calibration:
`main_infer_beamsearch_vllm.py` with `utils/beam_search.py` and `utils/ias.py`) run with
search frequency 1:

  step 0  the prompt is expanded K * M times, the whole per-step budget, unscored;
  step s  every candidate of the question's pool is scored (a sequence is scored once), the width
          rule sees the lower-quantile probabilities of the top K candidates by rank score and
          answers (k, m); the top k candidates by rank are kept (stable sort: ties go to the
          earlier candidate) and every kept live beam draws m next steps, while a kept finished
          beam draws nothing and passes into the next pool as one candidate;
  end     a question stops once all its kept beams are finished, or after max_steps expansion
          rounds; its answer is that of the top-ranked candidate of its last pool (ties: the
          earliest, in pool order: kept beams by rank, then each beam's steps in draw order).

K = 2, M = 3, candidates a..f after step 0, rank scores .9 .2 .7 .7 .1 .3, fixed width:
keep a (.9) and c (.7, before d); a is finished (EOS), so step 1 draws c1 c2 c3 (3 generations)
and the next pool is a c1 c2 c3.

A beam is finished when its last step does not end in `step_end_id` (it ended in EOS, or at a
length cap, or is empty) or when `answer_fn` reads an answer from its completion.
Counted per question: generations (steps drawn, the reference's `gen_counts`), policy tokens
(their tokens, `gen_tok_counts`), PRM tokens (prompt + completion length of every sequence
scored; the reference does not count these), expansion rounds.

Where this differs from the reference: the reference selects every `--freq` steps (default 5;
between selections each path draws one step); here every step. Its IAS-of-K (`determine_K`)
takes the k-th highest lower quantile over the whole pool, here over the top K by rank (the
beams a fixed-K search keeps); `allocation.ias.num_expansions` on the width rule's input divides
N(p) by the number of entries given, which is K as in `determine_M` unless the pool holds
fewer than K candidates. K here is the reference's `n_generations // beam_width`, M its
`beam_width`.
"""

import dataclasses
import operator
from collections.abc import Callable, Sequence

import jax
import numpy as np

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.sampler.decode import DecodeConfig, SamplingPolicy, sample_rows

ExpandFn = Callable[[list[list[int]], jax.Array], list[list[int]]]
ScoreFn = Callable[[list[list[int]]], np.ndarray]
AnswerFn = Callable[[list[int]], int | None]
WidthFn = Callable[[np.ndarray], tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class BeamConfig:
  """K beams x M expansions per step at most (paper: K = M = 8, 64 generations per step)."""
  num_beams: int  # K: beams kept per step (the most a width rule may keep)
  expansions: int  # M: next steps drawn per live beam (the most a width rule may ask for)
  max_steps: int  # expansion rounds per question, the first (K * M draws) included
  step_end_id: int  # the end-of-step token ("\n"); a step that ends otherwise finishes its beam
  rank_column: int = 1  # score_fn column that ranks beams (the 0.5 quantile of a 0.1/0.5/0.9 PRM)
  lower_column: int = 0  # score_fn column the width rule reads (the 0.1 quantile)
  # Other tokens that end a step: a BPE's merged pieces holding a newline ("\n\n", ...).
  extra_step_end_ids: tuple[int, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "extra_step_end_ids", tuple(self.extra_step_end_ids))
    if any(isinstance(i, bool) or not isinstance(i, (int, np.integer))
           for i in self.extra_step_end_ids):
      raise ValueError(f"extra_step_end_ids must be integers, got {self.extra_step_end_ids!r}")
    for name in ("num_beams", "expansions", "max_steps"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name in ("step_end_id", "rank_column", "lower_column"):
      if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name),
                                                                  (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")


@dataclasses.dataclass(frozen=True)
class BeamResult:
  """One question's search: the chosen completion, its answer and score, and what it cost."""
  answer: int | None  # answer_fn of the chosen completion
  completion: tuple[int, ...]  # the chosen beam's tokens after the prompt
  score: float  # its rank-column probability
  generations: int  # steps drawn
  policy_tokens: int  # tokens of those steps
  prm_tokens: int  # prompt + completion tokens of every sequence scored
  steps: int  # expansion rounds run
  generations_per_step: tuple[int, ...]


def fixed_width(num_beams: int, expansions: int) -> WidthFn:
  """The width rule of plain beam search: always (num_beams, expansions)."""
  BeamConfig(num_beams, expansions, max_steps=1, step_end_id=0)  # validates, naming the field
  return lambda p_lower_xK: (num_beams, expansions)


@dataclasses.dataclass
class _Beam:
  completion: list[int]
  done: bool


@dataclasses.dataclass
class _Search:
  """One question's state between steps."""
  prompt: list[int]
  pool: list[_Beam]
  kept: list[_Beam] = dataclasses.field(default_factory=list)
  m: int = 0
  finished: bool = False
  scores: dict = dataclasses.field(default_factory=dict)  # tuple(completion) -> probs_C
  prm_tokens: int = 0
  policy_tokens: int = 0
  generations_per_step: list = dataclasses.field(default_factory=list)

  def column(self, col: int) -> np.ndarray:
    return np.array([self.scores[tuple(b.completion)][col] for b in self.pool])


def _score(searches: Sequence[_Search], score_fn: ScoreFn, config: BeamConfig) -> None:
  """Scores, in one call, every pool candidate not scored before (duplicates once)."""
  owners, sequences = [], []
  for s in searches:
    for beam in s.pool:
      key = tuple(beam.completion)
      if key not in s.scores:
        s.scores[key] = None  # claimed: a duplicate in this pool is not sent again
        owners.append((s, key))
        sequences.append(s.prompt + beam.completion)
  if not sequences:
    return
  probs_NxC = np.asarray(score_fn(sequences), dtype=np.float64)
  if probs_NxC.ndim != 2 or probs_NxC.shape[0] != len(sequences):
    raise ValueError(f"score_fn must return probabilities of shape [{len(sequences)}, C] for "
                     f"{len(sequences)} sequences, got shape {probs_NxC.shape}")
  for name in ("rank_column", "lower_column"):
    col = getattr(config, name)
    if not -probs_NxC.shape[1] <= col < probs_NxC.shape[1]:
      raise ValueError(f"config.{name}={col} is not a column of score_fn's "
                       f"{probs_NxC.shape[1]} outputs")
  bad = ~((probs_NxC >= 0) & (probs_NxC <= 1))  # NaN fails both
  if bad.any():
    row = int(np.flatnonzero(bad.any(axis=1))[0])
    raise ValueError(f"score_fn must return probabilities in [0, 1] (no NaN), got "
                     f"{probs_NxC[row]} for sequence {row}")
  for (s, key), probs_C, seq in zip(owners, probs_NxC, sequences):
    s.scores[key] = probs_C
    s.prm_tokens += len(seq)


def _rank_order(s: _Search, config: BeamConfig) -> np.ndarray:
  return np.argsort(-s.column(config.rank_column), kind="stable")


def _select(s: _Search, width: WidthFn, config: BeamConfig) -> None:
  """Keeps the top k candidates by rank, with (k, m) from the width rule."""
  order = _rank_order(s, config)[:config.num_beams]
  p_lower_xK = np.sort(s.column(config.lower_column)[order])[::-1].copy()
  try:
    k, m = (operator.index(v) for v in width(p_lower_xK))
  except TypeError as e:
    raise ValueError(f"width must return a pair of integers (k_beams, m_expansions): {e}") from e
  if k < 1 or not 1 <= m <= config.expansions:
    raise ValueError(f"width returned (k={k}, m={m}); need k >= 1 and 1 <= m <= "
                     f"config.expansions={config.expansions}")
  s.kept = [s.pool[i] for i in order[:k]]  # never more beams than candidates
  s.m = m
  s.finished = all(b.done for b in s.kept)


def beam_search(prompts: Sequence[Sequence[int]], expand_fn: ExpandFn, score_fn: ScoreFn,
                answer_fn: AnswerFn, *, config: BeamConfig, width: WidthFn | None = None,
                key) -> list[BeamResult]:
  """PRM-guided beam search of every prompt together; one result per prompt.

  expand_fn(prefixes, key): one sampled next step per prefix (prompt + completion tokens),
    up to and including its end of step or EOS (fewer tokens where a length cap cut it).
  score_fn(sequences): probs_NxC in [0, 1] per prompt + completion; config names the columns.
  answer_fn(completion): the answer a completion (tokens after the prompt) states, or None.
  width(p_lower_xK): (k, m) from the top K candidates' lower-column probabilities sorted
    descending; None: fixed_width(config.num_beams, config.expansions).
  """
  if not prompts:
    raise ValueError("prompts must be a non-empty list of token lists")
  if any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token (for example BOS)")
  width = fixed_width(config.num_beams, config.expansions) if width is None else width
  searches = [_Search(prompt=[int(t) for t in p], pool=[_Beam([], False)]) for p in prompts]
  for step in range(config.max_steps):
    live = [s for s in searches if not s.finished]
    if step == 0:
      for s in live:
        s.kept, s.m = s.pool, config.num_beams * config.expansions
    else:
      _score(live, score_fn, config)
      for s in live:
        _select(s, width, config)
      live = [s for s in live if not s.finished]
    if not live:
      break
    prefixes = [s.prompt + b.completion for s in live for b in s.kept if not b.done
                for _ in range(s.m)]
    drawn = expand_fn(prefixes, jax.random.fold_in(key, step))
    if len(drawn) != len(prefixes):
      raise ValueError(f"expand_fn must return one step per prefix: {len(prefixes)} prefixes, "
                       f"{len(drawn)} steps")
    drawn = iter(drawn)
    for s in live:
      pool, count = [], 0
      for beam in s.kept:
        if beam.done:
          pool.append(beam)
          continue
        for _ in range(s.m):
          new = [int(t) for t in next(drawn)]
          completion = beam.completion + new
          done = (not new or new[-1] not in (config.step_end_id, *config.extra_step_end_ids)
                  or answer_fn(completion) is not None)
          pool.append(_Beam(completion, done))
          count += 1
          s.policy_tokens += len(new)
      s.pool = pool
      s.generations_per_step.append(count)
  _score(searches, score_fn, config)  # the last pools; earlier candidates are cached
  results = []
  for s in searches:
    best = s.pool[_rank_order(s, config)[0]]
    results.append(BeamResult(
        answer=answer_fn(best.completion), completion=tuple(best.completion),
        score=float(s.scores[tuple(best.completion)][config.rank_column]),
        generations=sum(s.generations_per_step), policy_tokens=s.policy_tokens,
        prm_tokens=s.prm_tokens, steps=len(s.generations_per_step),
        generations_per_step=tuple(s.generations_per_step)))
  return results


def step_expander(params, model_cfg: ModelConfig, *, max_step_tokens: int,
                  policy: SamplingPolicy, newline_id: int | Sequence[int], eos_id: int,
                  pad_id: int, max_rows: int | None = None) -> ExpandFn:
  """An `expand_fn` drawing one step per prefix with the KV-cache sampler, stopping at
  newline_id (or any of several: a BPE's newline pieces) or eos_id, after max_step_tokens, or
  where the sequence reaches model.max_len.

  One decode call for all prefixes with room for a whole step; a prefix within
  max_step_tokens of model.max_len has less room and is decoded in a call of its own length
  (one per such length: rare, and exact). Shapes are bucketed by `decode.sample_rows`, so a
  search compiles a few decodes only. max_rows: rows per decode call (bounds the KV cache); None: no limit.
  """
  if not 1 <= max_step_tokens < model_cfg.max_len:
    raise ValueError(f"max_step_tokens must be in [1, model.max_len={model_cfg.max_len}), "
                     f"got {max_step_tokens}")
  if max_rows is not None and max_rows < 1:
    raise ValueError(f"max_rows must be >= 1 or None, got {max_rows}")
  max_len = model_cfg.max_len

  def decode_rows(ids: list[list[int]], key) -> list[list[int]]:
    # Every row has room for the call's new tokens: prompt + new tokens <= max_len.
    room = min(max_step_tokens, max_len - max(map(len, ids)))
    dec = DecodeConfig(max_new_tokens=room, policy=policy,
                       stop_tokens=(*np.atleast_1d(newline_id).tolist(), eos_id), pad_id=pad_id)
    return sample_rows(params, ids, key, cfg=model_cfg, dec=dec, filler_id=eos_id)

  def expand(prefixes: list[list[int]], key) -> list[list[int]]:
    if any(len(p) == 0 for p in prefixes):
      raise ValueError("every prefix needs at least one token (for example BOS)")
    steps = [[] for _ in prefixes]  # a prefix already at max_len gets an empty step
    by_room = {}  # new tokens a prefix has room for -> its rows
    for i, p in enumerate(prefixes):
      if len(p) < max_len:
        by_room.setdefault(min(max_step_tokens, max_len - len(p)), []).append(i)
    calls = [rows[start:start + (max_rows or len(rows))]
             for _, rows in sorted(by_room.items(), reverse=True)
             for start in range(0, len(rows), max_rows or len(rows))]
    for c, rows in enumerate(calls):
      call_key = key if c == 0 else jax.random.fold_in(key, c)
      for i, step in zip(rows, decode_rows([list(prefixes[i]) for i in rows], call_key)):
        steps[i] = step
    return steps

  return expand
