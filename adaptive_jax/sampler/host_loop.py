"""The adaptive loop's per-question host reference: one question at a time, rules in NumPy.

The same draws as `adaptive.run` (the draw function is called on `rows` rows, padded, so it
compiles once) but the bookkeeping and every stop rule are written again on the host, with
`collections.Counter`, `scipy.stats.beta` and `np.percentile`: an independent implementation
for the tests, and the per-question Python loop the benchmark times against the device loop.
`run_host_budget` does the same for the budget-aware allocation, round by round (its
questions share the budget, so they cannot be run one at a time).
"""

import collections

import jax
import numpy as np
from scipy import stats

from adaptive_jax.allocation.online import BudgetAllocation
from adaptive_jax.sampler.adaptive import DrawFn, LoopConfig, Probe, StopRule, check_targets
from adaptive_jax.sampler.selection import NO_ANSWER


def _votes(answers, weights):
  totals = collections.Counter()
  for answer, weight in zip(answers, weights):
    if answer != NO_ANSWER:
      totals[answer] += weight
  return totals


def _beta_settled(answers) -> float:
  top = [count for _, count in _votes(answers, [1] * len(answers)).most_common(2)] + [0, 0]
  return float(stats.beta.sf(0.5, top[0] + 1, top[1] + 1))


def _consensus(answers, weights, tau) -> bool:
  totals = _votes(answers, weights)
  total = sum(totals.values())
  return total > 0 and max(totals.values()) >= tau * total


def run_host(draw_fn: DrawFn, data, target_Q, *, rule: StopRule, loop: LoopConfig,
             probe: Probe | None = None) -> dict:
  """Per question: drawn, answers_N, scores_NxC, confidence_N, truncated_N, tokens,
  scored_tokens, rounds, min_confidence; the fields of adaptive.LoopState as NumPy arrays."""
  target_Q = check_targets(target_Q, loop)
  draw = jax.jit(draw_fn)
  num_q, n = len(target_Q), loop.n_max
  out = {"drawn_Q": np.zeros(num_q, np.int32), "answers_QxN": np.full((num_q, n), NO_ANSWER),
         "scores_QxNxC": np.zeros((num_q, n, loop.num_channels), np.float32),
         "confidence_QxN": np.zeros((num_q, n), np.float32),
         "truncated_QxN": np.zeros((num_q, n), bool), "tokens_Q": np.zeros(num_q, np.int64),
         "scored_tokens_Q": np.zeros(num_q, np.int64), "rounds_Q": np.zeros(num_q, np.int32),
         "min_confidence_Q": np.full(num_q, -np.inf, np.float32)}
  out["target_Q"] = target_Q.copy()
  for q in range(num_q):
    drawn, tokens, bar, probed = 0, 0, -np.inf, probe is None
    answers, confidences, truncated = [], [], []
    while True:
      k = min(loop.per_round, out["target_Q"][q] - drawn)
      if not probed:
        k = min(k, probe.samples - drawn)
      if rule.kind == "deepconf" and drawn < rule.warmup:
        k = min(k, rule.warmup - drawn)
      if loop.token_budget:
        k = min(k, (loop.token_budget - tokens) // loop.max_sample_tokens)
      if k <= 0:
        break
      rows = np.arange(loop.rows)
      draws = jax.tree.map(np.asarray, draw(
          data, np.full(loop.rows, q, np.int32), (drawn + np.minimum(rows, k - 1)).astype(np.int32),
          rows < k, np.full(loop.rows, bar, np.float32)))
      slots = slice(drawn, drawn + k)
      out["answers_QxN"][q, slots] = draws.answer_B[:k]
      out["scores_QxNxC"][q, slots] = draws.scores_BxC[:k]
      out["confidence_QxN"][q, slots] = draws.confidence_B[:k]
      out["truncated_QxN"][q, slots] = draws.truncated_B[:k]
      answers += draws.answer_B[:k].tolist()
      confidences += draws.confidence_B[:k].tolist()
      truncated += draws.truncated_B[:k].tolist()
      tokens += int(draws.tokens_B[:k].sum())
      out["scored_tokens_Q"][q] += int(draws.scored_tokens_B[:k].sum())
      drawn += k
      out["rounds_Q"][q] += 1
      if not probed and drawn >= probe.samples:
        s = probe.samples
        new = probe.target_fn(data, np.array([q]), out["answers_QxN"][q:q + 1, :s],
                              out["scores_QxNxC"][q:q + 1, :s], out["confidence_QxN"][q:q + 1, :s])
        out["target_Q"][q] = min(max(int(np.asarray(new)[0]), s), n)
        probed = True
      if rule.kind == "adaptive_consistency" and _beta_settled(answers) >= rule.threshold:
        break
      if rule.kind == "deepconf":
        if np.isneginf(bar) and drawn >= rule.warmup:
          bar = np.float32(np.percentile(confidences[:rule.warmup], 100 - rule.keep_percent))
        kept = [a for a, t in zip(answers, truncated) if not t]
        weights = [c for c, t in zip(confidences, truncated) if not t]
        if not np.isneginf(bar) and _consensus(kept, weights, rule.threshold):
          break
    out["drawn_Q"][q], out["tokens_Q"][q], out["min_confidence_Q"][q] = drawn, tokens, bar
  return out


def run_host_budget(draw_fn: DrawFn, data, target_Q, *, loop: LoopConfig,
                    allocation: BudgetAllocation) -> dict:
  """The budget-aware loop written again round by round: Python lists per question, the
  priority order by a sort over Python tuples, each question's rows drawn by its own call."""
  target_Q = check_targets(target_Q, loop)
  draw = jax.jit(draw_fn)
  num_q, n = len(target_Q), loop.n_max
  prior_Q = np.asarray(data["prior_Q"], np.float32)
  strength = np.float32(allocation.prior_strength)
  answers = [[] for _ in range(num_q)]
  scores = [[] for _ in range(num_q)]
  tokens, scored, rounds = [0] * num_q, [0] * num_q, [0] * num_q
  open_q = [q for q in range(num_q) if target_Q[q] > 0]

  def p_of(q):  # float32, as the device loop computes it
    total = np.float32(0)
    for row in scores[q]:
      total = np.float32(total + np.float32(row[allocation.channel]))
    return np.float32((strength * prior_Q[q] + total) / np.float32(strength + len(scores[q])))

  while open_q:
    spent = sum(len(a) for a in answers)
    capacity = min(loop.rows, allocation.budget - spent)
    wants = {q: (1 if not answers[q] else min(loop.per_round, target_Q[q] - len(answers[q])))
             for q in open_q}
    order = sorted(open_q, key=lambda q: (0 if not answers[q] else 1, -p_of(q), q))
    granted = {}
    for q in order:
      granted[q] = max(0, min(wants[q], capacity))
      capacity -= granted[q]
    for q in open_q:
      k = granted[q]
      if k == 0:
        continue
      rows = np.arange(loop.rows)
      drawn = len(answers[q])
      out = jax.tree.map(np.asarray, draw(
          data, np.full(loop.rows, q, np.int32), (drawn + np.minimum(rows, k - 1)).astype(np.int32),
          rows < k, np.full(loop.rows, -np.inf, np.float32)))
      answers[q] += out.answer_B[:k].tolist()
      scores[q] += [row for row in out.scores_BxC[:k]]
      tokens[q] += int(out.tokens_B[:k].sum())
      scored[q] += int(out.scored_tokens_B[:k].sum())
      rounds[q] += 1
    spent = sum(len(a) for a in answers)
    still = []
    for q in open_q:
      solved = any(row[allocation.channel] >= allocation.solved_at for row in scores[q])
      hopeless = bool(answers[q]) and p_of(q) < allocation.hopeless_below
      if not (solved or hopeless or len(answers[q]) >= target_Q[q] or spent >= allocation.budget):
        still.append(q)
    open_q = still
  out = {"drawn_Q": np.array([len(a) for a in answers], np.int32),
         "answers_QxN": np.full((num_q, n), NO_ANSWER),
         "scores_QxNxC": np.zeros((num_q, n, loop.num_channels), np.float32),
         "tokens_Q": np.array(tokens), "scored_tokens_Q": np.array(scored),
         "rounds_Q": np.array(rounds, np.int32)}
  for q in range(num_q):
    out["answers_QxN"][q, :len(answers[q])] = answers[q]
    if scores[q]:
      out["scores_QxNxC"][q, :len(scores[q])] = np.stack(scores[q])
  return out
