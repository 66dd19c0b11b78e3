"""The adaptive sampling loop on device: rounds of draws for the questions still active, all in
one `jax.lax.while_loop`, each question leaving by its method's rule.

Letters here: Q questions, N sample slots per question (n_max), B rows drawn per round, C score
channels (for example the PRM's last-step and minimum-over-steps scores).

Each round, every active question asks for k_q = min(per_round, target_q - drawn_q) samples
(fewer if its token budget has no room for them; during DeepConf's warm-up no more than the
warm-up still needs). Requests are packed into the B rows in question order, whole: a request
that does not fit waits for a later round, so the sizes of a question's draws never depend on
the other questions. Example, B = 4, requests k = (2, 0, 1, 2):

  ends = cumsum(k) = (2, 2, 3, 5)     question 3 ends past row 4: it waits this round
  rows   0    1    2    3
  q      0    0    2    -            (row 3 is padding: valid_B False, nothing is drawn)
  slot   d0   d0+1 d2                 d_q = samples question q has drawn so far

A question's draws are a pure function of (question, slot) (the draw function folds both into
its key), so the loop gives exactly what a per-question host loop gives (`host_loop.py`).
After each round a question stops when it has its target (fixed N, IAS's N(p), or the target
a `Probe` sets from the question's first draws), when no sample fits its token budget, or by its rule: Adaptive-Consistency's Beta posterior, or
DeepConf-online's consensus of the confidence-weighted vote.

With a `BudgetAllocation` (allocation/online.py) the questions share one sample budget and
the rows go by priority instead of question order: a question's draws then depend on the
others' (by design), and `host_loop.run_host_budget` is its round-by-round reference.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.allocation import online
from adaptive_jax.sampler import confidence, consistency, selection
from adaptive_jax.typed_config import check_int

RULES = ("fixed", "adaptive_consistency", "deepconf")


class Draws(NamedTuple):
  """One complete sample per row."""
  answer_B: jax.Array  # int32; selection.NO_ANSWER when it has none (or was truncated)
  scores_BxC: jax.Array  # float32 in [0, 1]: the scorer's channels for this sample
  confidence_B: jax.Array  # float32: the trace's lowest group confidence (DeepConf)
  tokens_B: jax.Array  # int32: policy tokens generated
  scored_tokens_B: jax.Array  # int32: tokens the scorer (PRM) read
  truncated_B: jax.Array  # bool: stopped early by its confidence threshold


# draw_fn(data, question_B, slot_B, valid_B, min_confidence_B) -> Draws. `data` is any pytree
# (policy params, prompts, a pool of pre-drawn samples) passed through as a traced argument.
DrawFn = Callable[[Any, jax.Array, jax.Array, jax.Array, jax.Array], Draws]


@dataclasses.dataclass(frozen=True)
class StopRule:
  """When a question stops drawing, besides reaching its target count.

  fixed: only the target (fixed N; IAS best-of-N with target N(p)).
  adaptive_consistency: `consistency.beta_stop` at `threshold` after each round.
  deepconf: the first `warmup` samples set the question's early-stop threshold
    (`confidence.online_threshold` at `keep_percent`); later samples stop early below it, and
    the question stops once the confidence-weighted vote of its kept samples reaches
    `threshold` (consensus).
  """
  kind: str = "fixed"
  threshold: float = 0.95
  warmup: int = 0
  keep_percent: float = 10.0

  def __post_init__(self):
    if self.kind not in RULES:
      raise ValueError(f"StopRule.kind must be one of {RULES}, got {self.kind!r}")
    if isinstance(self.threshold, bool) or not 0 < self.threshold < 1:
      raise ValueError(f"StopRule.threshold must be in (0, 1), got {self.threshold!r}")
    if self.kind == "deepconf":  # its first `warmup` samples set the early-stop threshold
      check_int("StopRule", "warmup", self.warmup)
    if not 0 < self.keep_percent <= 100:
      raise ValueError(f"StopRule.keep_percent must be in (0, 100], got {self.keep_percent!r}")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """Static shapes of the loop."""
  n_max: int  # sample slots per question: no question ever draws more
  per_round: int  # samples a question asks for per round at most
  rows: int  # B, rows drawn per round (>= per_round)
  num_channels: int = 1  # C
  token_budget: int = 0  # > 0: a question's generated tokens never exceed it
  max_sample_tokens: int = 0  # tokens one sample can take at most (needed with a budget)

  def __post_init__(self):
    for name in ("n_max", "per_round", "rows", "num_channels"):
      check_int("LoopConfig", name, getattr(self, name))
    for name in ("token_budget", "max_sample_tokens"):
      check_int("LoopConfig", name, getattr(self, name), minimum=0)
    if self.rows < self.per_round:
      raise ValueError(f"LoopConfig.rows ({self.rows}) must be >= per_round ({self.per_round})")
    if self.token_budget and self.max_sample_tokens < 1:
      raise ValueError(f"LoopConfig.max_sample_tokens must be >= 1 with a token_budget "
                       f"({self.token_budget}), got {self.max_sample_tokens}")


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static jit argument
class Probe:
  """Sets each question's target from its first `samples` draws (before: up to `samples`).

  target_fn(data, question_Q, answers_QxK, scores_QxKxC, confidence_QxK) -> target_Q, with K =
  samples; the loop clips the result to [samples, n_max]. An estimate of the question's
  success probability from its first sample, turned into N(p) by the caller's rule.
  """
  samples: int
  target_fn: Callable

  def __post_init__(self):
    check_int("Probe", "samples", self.samples)


class LoopState(NamedTuple):
  target_Q: jax.Array  # samples wanted at most (a Probe sets it after its draws)
  probed_Q: jax.Array  # the Probe has set the target (always True without one)
  drawn_Q: jax.Array  # samples drawn
  answers_QxN: jax.Array
  scores_QxNxC: jax.Array
  confidence_QxN: jax.Array
  truncated_QxN: jax.Array
  tokens_Q: jax.Array  # policy tokens generated, all samples
  scored_tokens_Q: jax.Array
  active_Q: jax.Array
  rounds_Q: jax.Array  # rounds in which the question drew
  min_confidence_Q: jax.Array  # DeepConf threshold (-inf until its warm-up is done)
  round: jax.Array

  def filled(self) -> jax.Array:
    """filled_QxN: slots holding a drawn sample."""
    return jnp.arange(self.answers_QxN.shape[1])[None, :] < self.drawn_Q[:, None]

  def kept(self) -> jax.Array:
    """kept_QxN: drawn and not truncated (the samples that vote)."""
    return self.filled() & ~self.truncated_QxN


def _requests(state: LoopState, rule: StopRule, loop: LoopConfig, probe: Probe | None,
              allocation: online.BudgetAllocation | None = None):
  """k_Q: how many samples each question asks for this round (see the module docstring)."""
  k_Q = jnp.minimum(loop.per_round, state.target_Q - state.drawn_Q)
  if allocation is not None:  # one sample first: the allocator learns before it spends
    k_Q = jnp.where(state.drawn_Q == 0, jnp.minimum(k_Q, 1), k_Q)
  if probe is not None:
    k_Q = jnp.where(state.probed_Q, k_Q, jnp.minimum(k_Q, probe.samples - state.drawn_Q))
  if rule.kind == "deepconf":
    in_warmup_Q = state.drawn_Q < rule.warmup
    k_Q = jnp.where(in_warmup_Q, jnp.minimum(k_Q, rule.warmup - state.drawn_Q), k_Q)
  if loop.token_budget:
    k_Q = jnp.minimum(k_Q, (loop.token_budget - state.tokens_Q) // loop.max_sample_tokens)
  return jnp.maximum(k_Q, 0)


def _rule_stop(state: LoopState, rule: StopRule):
  if rule.kind == "adaptive_consistency":
    return consistency.beta_stop(state.answers_QxN, state.filled(), threshold=rule.threshold)
  if rule.kind == "deepconf":
    warm_Q = ~jnp.isneginf(state.min_confidence_Q)
    return warm_Q & confidence.consensus(state.answers_QxN, state.confidence_QxN, state.kept(),
                                         tau=rule.threshold)
  return jnp.zeros_like(state.active_Q)


def _verified_p(data, state: LoopState, allocation: online.BudgetAllocation) -> jax.Array:
  score_QxN = state.scores_QxNxC[..., allocation.channel]
  score_sum_Q = jnp.sum(jnp.where(state.kept(), score_QxN, 0.0), axis=1)
  return online.posterior_mean(data["prior_Q"], score_sum_Q, state.drawn_Q,
                               allocation.prior_strength)


def _allocation_stop(data, state: LoopState, allocation: online.BudgetAllocation) -> jax.Array:
  """Solved (a kept sample scored >= solved_at), hopeless, or the budget is spent."""
  score_QxN = state.scores_QxNxC[..., allocation.channel]
  solved_Q = jnp.any(state.kept() & (score_QxN >= allocation.solved_at), axis=1)
  hopeless_Q = (state.drawn_Q > 0) & (_verified_p(data, state, allocation)
                                      < allocation.hopeless_below)
  return solved_Q | hopeless_Q | (jnp.sum(state.drawn_Q) >= allocation.budget)


def _round(draw_fn: DrawFn, data, rule: StopRule, loop: LoopConfig, probe: Probe | None,
           allocation: online.BudgetAllocation | None, state: LoopState) -> LoopState:
  num_q = state.drawn_Q.shape[0]
  k_Q = jnp.where(state.active_Q, _requests(state, rule, loop, probe, allocation), 0)
  if allocation is None:
    ends_Q = jnp.cumsum(k_Q)
    k_Q = jnp.where(ends_Q <= loop.rows, k_Q, 0)  # whole requests only; ends stay monotone
  else:
    capacity = jnp.minimum(loop.rows, allocation.budget - jnp.sum(state.drawn_Q))
    k_Q = online.grant(k_Q, online.priority(_verified_p(data, state, allocation),
                                            state.drawn_Q), capacity)
  ends_Q = jnp.cumsum(k_Q)
  row_B = jnp.arange(loop.rows)
  question_B = jnp.minimum(jnp.searchsorted(ends_Q, row_B, side="right"), num_q - 1)
  valid_B = row_B < ends_Q[-1]
  slot_B = state.drawn_Q[question_B] + row_B - (ends_Q - k_Q)[question_B]
  draws = draw_fn(data, question_B, slot_B, valid_B, state.min_confidence_Q[question_B])

  # Padding rows scatter out of bounds and are dropped.
  q_B = jnp.where(valid_B, question_B, num_q)
  put = lambda buf, x: buf.at[q_B, slot_B].set(x, mode="drop")
  add = lambda total, x: total + jnp.zeros_like(total).at[q_B].add(x, mode="drop")
  state = state._replace(
      drawn_Q=state.drawn_Q + k_Q,
      answers_QxN=put(state.answers_QxN, draws.answer_B),
      scores_QxNxC=put(state.scores_QxNxC, draws.scores_BxC),
      confidence_QxN=put(state.confidence_QxN, draws.confidence_B),
      truncated_QxN=put(state.truncated_QxN, draws.truncated_B),
      tokens_Q=add(state.tokens_Q, draws.tokens_B),
      scored_tokens_Q=add(state.scored_tokens_Q, draws.scored_tokens_B),
      rounds_Q=state.rounds_Q + (k_Q > 0),
      round=state.round + 1)
  if rule.kind == "deepconf":
    # The threshold is set once, from the first `warmup` samples, when the warm-up is complete.
    warmed_Q = jnp.isneginf(state.min_confidence_Q) & (state.drawn_Q >= rule.warmup)
    threshold_Q = confidence.online_threshold(state.confidence_QxN[:, :rule.warmup],
                                              state.filled()[:, :rule.warmup],
                                              keep_percent=rule.keep_percent)
    state = state._replace(min_confidence_Q=jnp.where(warmed_Q, threshold_Q,
                                                      state.min_confidence_Q))
  if probe is not None:
    k = probe.samples
    probe_Q = ~state.probed_Q & (state.drawn_Q >= k)
    new_Q = jnp.clip(probe.target_fn(data, jnp.arange(num_q), state.answers_QxN[:, :k],
                                     state.scores_QxNxC[:, :k], state.confidence_QxN[:, :k]),
                     k, loop.n_max).astype(jnp.int32)
    state = state._replace(target_Q=jnp.where(probe_Q, new_Q, state.target_Q),
                           probed_Q=state.probed_Q | probe_Q)
  exhausted_Q = _requests(state, rule, loop, probe, allocation) == 0
  stop_Q = exhausted_Q | _rule_stop(state, rule)
  if allocation is not None:
    stop_Q = stop_Q | _allocation_stop(data, state, allocation)
  return state._replace(active_Q=state.active_Q & ~stop_Q)


def check_targets(target_Q, loop: LoopConfig) -> np.ndarray:
  """target_Q as int32 NumPy, or ValueError: one count in [0, n_max] per question, >= 1 question."""
  target_Q = np.asarray(target_Q)
  if target_Q.ndim != 1 or target_Q.shape[0] < 1:
    raise ValueError(f"target_Q must hold one count per question, for at least one question; "
                     f"got shape {target_Q.shape}")
  if not np.issubdtype(target_Q.dtype, np.integer) or (target_Q < 0).any() or \
      (target_Q > loop.n_max).any():
    raise ValueError(f"target_Q must be integers in [0, n_max={loop.n_max}], got {target_Q}")
  return target_Q.astype(np.int32)


def adaptive_loop(draw_fn: DrawFn, data, target_Q, *, rule: StopRule, loop: LoopConfig,
                  probe: Probe | None = None,
                  allocation: online.BudgetAllocation | None = None) -> LoopState:
  """Draws for every question until each has stopped; target_Q: samples wanted at most, in
  [0, n_max] (`run` checks; with a probe, the most it may draw before the probe sets it).
  With `allocation`, data["prior_Q"] holds each question's prior estimate. Traceable, with
  draw_fn, rule, loop, probe and allocation static."""
  target_Q = jnp.asarray(target_Q, jnp.int32)
  num_q, n = target_Q.shape[0], loop.n_max
  state = LoopState(
      target_Q=target_Q, probed_Q=jnp.full(num_q, probe is None),
      drawn_Q=jnp.zeros(num_q, jnp.int32),
      answers_QxN=jnp.full((num_q, n), selection.NO_ANSWER, jnp.int32),
      scores_QxNxC=jnp.zeros((num_q, n, loop.num_channels), jnp.float32),
      confidence_QxN=jnp.zeros((num_q, n), jnp.float32),
      truncated_QxN=jnp.zeros((num_q, n), bool),
      tokens_Q=jnp.zeros(num_q, jnp.int32), scored_tokens_Q=jnp.zeros(num_q, jnp.int32),
      active_Q=jnp.ones(num_q, bool), rounds_Q=jnp.zeros(num_q, jnp.int32),
      min_confidence_Q=jnp.full(num_q, -jnp.inf, jnp.float32), round=jnp.int32(0))
  state = state._replace(active_Q=_requests(state, rule, loop, probe, allocation) > 0)
  return jax.lax.while_loop(
      lambda s: jnp.any(s.active_Q),
      lambda s: _round(draw_fn, data, rule, loop, probe, allocation, s), state)


_jitted_loop = jax.jit(adaptive_loop,
                       static_argnames=("draw_fn", "rule", "loop", "probe", "allocation"))


def check_allocation(allocation: online.BudgetAllocation | None, data, target_Q,
                     loop: LoopConfig, rule: StopRule, probe: Probe | None) -> None:
  """ValueError unless `allocation` fits the loop: a fixed rule, no probe, a channel the
  scores have, a budget of at least one sample per question and a prior_Q in [0, 1]."""
  if allocation is None:
    return
  if rule.kind != "fixed" or probe is not None:
    raise ValueError(f"a BudgetAllocation runs with StopRule('fixed') and no Probe, got "
                     f"{rule.kind!r} and probe={probe!r}")
  if loop.token_budget:
    raise ValueError("a BudgetAllocation shares a sample budget: set LoopConfig.token_budget "
                     f"to 0, got {loop.token_budget}")
  if allocation.channel >= loop.num_channels:
    raise ValueError(f"BudgetAllocation.channel must be < loop.num_channels="
                     f"{loop.num_channels}, got {allocation.channel}")
  if allocation.budget < len(target_Q):
    raise ValueError(f"BudgetAllocation.budget must be >= the number of questions "
                     f"({len(target_Q)}): at least one sample each; got {allocation.budget}")
  prior = data.get("prior_Q") if isinstance(data, dict) else None
  prior_Q = np.asarray(np.nan if prior is None else prior, np.float64)
  if prior_Q.shape != target_Q.shape or np.isnan(prior_Q).any() or (prior_Q < 0).any() or \
      (prior_Q > 1).any():
    raise ValueError(f"a BudgetAllocation needs data['prior_Q']: one probability in [0, 1] per "
                     f"question, shape {target_Q.shape}; got {prior_Q!r}")


def run(draw_fn: DrawFn, data, target_Q, *, rule: StopRule, loop: LoopConfig,
        probe: Probe | None = None,
        allocation: online.BudgetAllocation | None = None) -> LoopState:
  """`adaptive_loop` compiled, after checking target_Q (and the allocation); the draws' scores
  and confidences are checked after it (a score function returning NaN or values outside
  [0, 1] raises)."""
  target_Q = check_targets(target_Q, loop)
  check_allocation(allocation, data, target_Q, loop, rule, probe)
  state = _jitted_loop(draw_fn, data, target_Q, rule=rule, loop=loop, probe=probe,
                       allocation=allocation)
  scores = np.asarray(state.scores_QxNxC)
  if np.isnan(scores).any() or (scores < 0).any() or (scores > 1).any():
    bad = scores[np.isnan(scores) | (scores < 0) | (scores > 1)]
    raise ValueError(f"the score function (draw_fn's scores_BxC) must return probabilities in "
                     f"[0, 1] with no NaN, got {bad[:5]}")
  if np.isnan(np.asarray(state.confidence_QxN)).any():
    raise ValueError("draw_fn returned NaN confidences (confidence_B)")
  return state
