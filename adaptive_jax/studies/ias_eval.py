"""Adaptive sampling evaluated from saved pools: fixed-N curves, IAS and budget sweeps, ratios.

Everything here reads a `PoolSplit` (a split's pool of N samples per question with its scores,
estimates and FLOP costs) and nothing else, so the study that draws the pools and the
benchmark that reloads them (`python -m benchmarks.ias --pools=DIR`) compute the same numbers.

- Fixed N: for each k, the accuracy and FLOPs of the first k samples, averaged over `orders`
  random orders of each question's pool (the same orders for every k and aggregation).
  Coverage (a perfect selector: an oracle that reads the gold answer) is the unbiased pass@k.
- IAS: N(p) from an estimate, swept over the confidence q and the cap n_max (paper: 0.99, 64).
- Budget-aware, offline: `budget.greedy_allocation` of B = b * Q samples from the estimate.
- Budget-aware, online: `online.BudgetAllocation` in the loop, a verifier channel updating
  each question's estimate after every round.
Each method's per-question correctness and FLOPs are matched against the fixed curve of the
same aggregation (`scaling.matched`), with a paired bootstrap interval over questions.

Aggregations are named "majority", "best:<channel>" (the highest-scoring sample) or
"vote:<channel>" (score-weighted vote); channels are named by the pool's `channels`.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax import bootstrap
from adaptive_jax.allocation import budget, ias, online
from adaptive_jax.sampler import adaptive, draws, selection
from adaptive_jax.sampler.adaptive import LoopConfig, StopRule
from adaptive_jax.scaling import matched, pass_at_k

# One replay for every method: the loop is compiled per draw function (hashed by identity).
# No confidence window: these methods never stop a sample early.
_REPLAY = draws.PoolDraw(confidence_window=0, group_window=1)


@dataclasses.dataclass(frozen=True)
class PoolSplit:
  """One split's pool and what the evaluation reads beside it (NumPy arrays)."""
  pool: draws.Pool
  channels: tuple[str, ...]  # names of pool.scores_QxNxC's last axis
  gold_Q: np.ndarray
  difficulty_Q: np.ndarray
  prompt_tokens_Q: np.ndarray
  estimates: dict  # name -> p_Q, each question's success estimate before any sample
  policy_flops: float  # forward FLOPs per policy token
  prm_flops: float  # per PRM token

  @property
  def correct_QxN(self) -> np.ndarray:
    return np.asarray(self.pool.answers_QxN) == self.gold_Q[:, None]

  @property
  def num_samples(self) -> int:
    return int(self.pool.answers_QxN.shape[1])


def check_aggregation(name: str, channels) -> tuple[str, int | None]:
  """(how, channel index) of an aggregation name, or ValueError naming the allowed forms."""
  if name == "majority":
    return "majority", None
  how, _, channel = name.partition(":")
  if how not in ("best", "vote") or channel not in channels:
    raise ValueError(f"aggregation must be 'majority', 'best:<channel>' or 'vote:<channel>' "
                     f"with a channel in {tuple(channels)}, got {name!r}")
  return how, tuple(channels).index(channel)


def reads_prm(name: str, channels) -> bool:
  """Whether an aggregation reads a learned scorer (whose tokens it then pays for)."""
  how, channel = check_aggregation(name, channels)
  return how != "majority" and not channels[channel].startswith("rule")


def aggregate(answers_QxN, scores_QxNxC, kept_QxN, name: str, channels) -> jax.Array:
  how, channel = check_aggregation(name, channels)
  if how == "majority":
    return selection.majority_vote(answers_QxN, kept_QxN)
  if how == "vote":
    return selection.weighted_vote(answers_QxN, scores_QxNxC[..., channel], kept_QxN)
  return selection.best_score(answers_QxN, scores_QxNxC[..., channel], kept_QxN)


@functools.partial(jax.jit, static_argnames=("names", "channels"))
def _aggregate_all(answers_QxK, scores_QxKxC, *, names, channels):
  kept_QxK = jnp.ones(answers_QxK.shape, bool)
  return jnp.stack([aggregate(answers_QxK, scores_QxKxC, kept_QxK, n, channels) for n in names])


def fixed_curves(split: PoolSplit, ks, aggregations, *, orders: int, seed: int) -> dict:
  """name -> {"ks", "correct_KxQ", "flops_KxQ"} for each aggregation, and "coverage"
  (unbiased pass@k, with majority's FLOPs): fixed N = k averaged over random pool orders."""
  pool, names = split.pool, tuple(aggregations)
  n = split.num_samples
  ks = tuple(int(k) for k in ks)
  if not ks or min(ks) < 1 or max(ks) > n:
    raise ValueError(f"fixed_ns must be in [1, {n}] (the pool's samples), got {ks}")
  answers_QxN = np.asarray(pool.answers_QxN)
  scores_QxNxC = np.asarray(pool.scores_QxNxC)
  lengths_QxN = np.asarray(pool.lengths_QxN, np.float64)
  correct = {name: np.zeros((len(ks), len(split.gold_Q))) for name in names}
  tokens_KxQ = np.zeros((len(ks), len(split.gold_Q)))
  for order_QxN in pass_at_k.random_orders(*answers_QxN.shape, orders=orders, seed=seed):
    answers = np.take_along_axis(answers_QxN, order_QxN, 1)
    scores = np.take_along_axis(scores_QxNxC, order_QxN[..., None], 1)
    lengths = np.take_along_axis(lengths_QxN, order_QxN, 1)
    for i, k in enumerate(ks):
      picked_AxQ = np.asarray(_aggregate_all(answers[:, :k], scores[:, :k], names=names,
                                             channels=tuple(split.channels)))
      for name, picked_Q in zip(names, picked_AxQ):
        correct[name][i] += picked_Q == split.gold_Q
      tokens_KxQ[i] += lengths[:, :k].sum(1)
  tokens_KxQ /= orders
  prompt_Q = split.prompt_tokens_Q.astype(np.float64)
  k_K = np.asarray(ks, np.float64)[:, None]
  policy_KxQ = (tokens_KxQ + prompt_Q) * split.policy_flops
  # A scorer reads each sample whole: prompt and solution.
  prm_KxQ = (tokens_KxQ + k_K * prompt_Q) * split.prm_flops
  curves = {name: {"ks": ks, "correct_KxQ": correct[name] / orders,
                   "flops_KxQ": policy_KxQ + reads_prm(name, split.channels) * prm_KxQ}
            for name in names}
  coverage_KxQ = np.stack([pass_at_k.unbiased_pass_at_k(split.correct_QxN, k) for k in ks])
  curves["coverage"] = {"ks": ks, "correct_KxQ": coverage_KxQ, "flops_KxQ": policy_KxQ}
  return curves


@dataclasses.dataclass(frozen=True)
class MethodRun:
  """Per question: correct, covered (a drawn sample is right), samples, FLOPs."""
  correct_Q: np.ndarray
  covered_Q: np.ndarray
  samples_Q: np.ndarray
  flops_Q: np.ndarray

  def summary(self, difficulty_Q) -> dict:
    by = lambda x: {str(d): float(np.mean(x[difficulty_Q == d])) for d in np.unique(difficulty_Q)}
    return {"accuracy": float(self.correct_Q.mean()), "coverage": float(self.covered_Q.mean()),
            "samples": float(self.samples_Q.mean()), "flops": float(self.flops_Q.mean()),
            "samples_by_difficulty": by(self.samples_Q.astype(np.float64)),
            "accuracy_by_difficulty": by(self.correct_Q.astype(np.float64))}


def run_method(split: PoolSplit, aggregation: str, *, per_round: int, rows: int,
               target_Q=None, allocation: online.BudgetAllocation | None = None,
               prior_Q=None, reads_estimate: bool = True) -> MethodRun:
  """One method through the on-device loop on a replay of the pool: fixed targets (fixed N,
  IAS, offline budget) or, with `allocation`, the online budget-aware loop from `prior_Q`.
  `reads_estimate`: the method scored the question's empty prefix (its PRM tokens count)."""
  n = split.num_samples
  num_q = len(split.gold_Q)
  loop = LoopConfig(n_max=n, per_round=per_round, rows=rows, num_channels=len(split.channels))
  prior = np.zeros(num_q) if prior_Q is None else np.asarray(prior_Q)
  data = {"pool": split.pool, "score_cost": 1, "prior_Q": jnp.asarray(prior, jnp.float32)}
  target_Q = np.full(num_q, n, np.int32) if target_Q is None else np.asarray(target_Q, np.int32)
  state = adaptive.run(_REPLAY, data, target_Q, rule=StopRule(), loop=loop,
                       allocation=allocation)
  kept_QxN = np.asarray(state.kept())
  answers_QxN = np.asarray(state.answers_QxN)
  picked_Q = np.asarray(aggregate(answers_QxN, np.asarray(state.scores_QxNxC), kept_QxN,
                                  aggregation, split.channels))
  prompt_Q = split.prompt_tokens_Q.astype(np.float64)
  pays = reads_prm(aggregation, split.channels) or (
      allocation is not None and not split.channels[allocation.channel].startswith("rule"))
  flops_Q = ((np.asarray(state.tokens_Q) + prompt_Q) * split.policy_flops
             + (pays * np.asarray(state.scored_tokens_Q) + reads_estimate * prompt_Q)
             * split.prm_flops)
  covered_Q = ((answers_QxN == split.gold_Q[:, None]) & kept_QxN).any(1)
  return MethodRun(picked_Q == split.gold_Q, covered_Q, np.asarray(state.drawn_Q), flops_Q)


def ias_targets(p_Q, *, q: float, n_max: int) -> np.ndarray:
  return np.asarray(ias.num_samples(np.asarray(p_Q), n_max=n_max, q=q), np.int32)


def offline_targets(p_Q, *, per_question: float, n_max: int) -> np.ndarray:
  """Greedy allocation of round(per_question * Q) samples, at least one each."""
  total = max(int(round(per_question * len(p_Q))), len(p_Q))
  return budget.greedy_allocation(p_Q, total, n_max=n_max, n_min=1)


def accuracy_interval(correct_Q, resamples: int, seed: int) -> list:
  """90% percentile bootstrap interval of the mean accuracy over questions."""
  correct_Q = np.asarray(correct_Q, np.float64)
  counts_RxQ = bootstrap.resample_counts(len(correct_Q), resamples=resamples, seed=seed)
  return bootstrap.percentile_interval(counts_RxQ @ correct_Q / len(correct_Q), 0.9)


def match(curve: dict, run: MethodRun, *, resamples: int, seed: int) -> dict:
  """The method against the fixed curve: ratio at matched accuracy, paired 90% interval."""
  return matched.paired_bootstrap(curve["flops_KxQ"], curve["correct_KxQ"], run.flops_Q,
                                  run.correct_Q.astype(np.float64), resamples=resamples,
                                  seed=seed)


def fixed_accuracy_at(curve: dict, k: int) -> float:
  """The fixed method's mean accuracy at N = k (a point of the curve)."""
  return float(curve["correct_KxQ"][list(curve["ks"]).index(k)].mean())


def choose_setting(results: list[dict], accuracy_floor: float) -> int:
  """Index of the cheapest setting (mean FLOPs) whose accuracy reaches `accuracy_floor`; if
  none does, the most accurate (then the cheapest). The validation split's choice."""
  reaching = [i for i, r in enumerate(results) if r["accuracy"] >= accuracy_floor]
  if reaching:
    return min(reaching, key=lambda i: (results[i]["flops"], i))
  return min(range(len(results)), key=lambda i: (-results[i]["accuracy"], results[i]["flops"], i))
