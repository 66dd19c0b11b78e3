"""The test regime of an IAS evaluation, chosen from fixed-N curves on a design split.

IAS can only gain where a perfect selector would: a mix of questions the policy sometimes
solves, a budget N_max that finds the answer when it exists, and few questions no sample
solves. The criteria are fixed before IAS is looked at (`RegimeCriteria`'s defaults);
`candidate_stats` measures every candidate regime on the design split's pools and
`choose_regime` applies one fixed rule to them. A candidate is a run [lo, hi] of consecutive
difficulties among those drawn (a difficulty not drawn is skipped, not a gap that ends the
run), mixed uniformly (each of its D difficulties weighs 1 / D, shared equally by its
questions), at one drawn temperature, with one N_max. Letters: Q questions, N pool samples
(all drawn per question), D difficulties, K budgets.

  stats = candidate_stats({0.7: correct_QxN}, difficulty_Q, (16, 32, 64))
  print(describe(choose_regime(stats, RegimeCriteria())))
  print(describe(negative_control(stats, 0.7, 32)))
"""

import dataclasses
import math

import numpy as np

from adaptive_jax.scaling.pass_at_k import unbiased_pass_at_k
from adaptive_jax.tasks.arithmetic import MAX_DIFFICULTY, MIN_DIFFICULTY, check_difficulties
from adaptive_jax.typed_config import check_integer, is_number

# Slack on every threshold, so that a pool built to sit exactly on one (0.3 = 3 / 10) meets it.
_TOL = 1e-9


@dataclasses.dataclass(frozen=True)
class RegimeCriteria:
  """What a test regime must show on the design split; the defaults were fixed before any run."""
  pass1_range: tuple[float, float] = (0.3, 0.6)  # mean pass@1 of the mix lies in [lo, hi]
  min_headroom: float = 0.25  # pass@N_max - pass@1 (a perfect selector's gain) at least this
  max_hopeless: float = 0.10  # at most this share of questions with no correct pool sample
  n_max_choices: tuple[int, ...] = (16, 32, 64)  # budgets considered (those <= pool size)
  min_difficulties: int = 2  # a mix spans at least this many consecutive difficulties

  def __post_init__(self):
    pass1_range = tuple(np.atleast_1d(np.asarray(self.pass1_range, dtype=object)).tolist())
    if (len(pass1_range) != 2 or not all(is_number(v) for v in pass1_range)
        or not 0 <= pass1_range[0] < pass1_range[1] <= 1):
      raise ValueError(f"regime.pass1_range must be (lo, hi) with 0 <= lo < hi <= 1, got "
                       f"{self.pass1_range!r}")
    object.__setattr__(self, "pass1_range", tuple(float(v) for v in pass1_range))
    # Both are > 0 because they normalize the violation score of a candidate that misses them.
    object.__setattr__(self, "min_headroom",
                       _check_unit("regime.min_headroom", self.min_headroom))
    object.__setattr__(self, "max_hopeless",
                       _check_unit("regime.max_hopeless", self.max_hopeless))
    object.__setattr__(self, "n_max_choices",
                       _check_n_max_choices("regime.n_max_choices", self.n_max_choices))
    object.__setattr__(self, "min_difficulties", check_integer(
        "regime.min_difficulties", self.min_difficulties,
        maximum=MAX_DIFFICULTY - MIN_DIFFICULTY + 1))


def _check_unit(name: str, value) -> float:
  """`value` as a float; ValueError naming `name` unless 0 < value <= 1."""
  if not is_number(value) or not 0 < value <= 1:
    raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
  return float(value)


def _check_n_max_choices(name: str, values) -> tuple[int, ...]:
  """`values` as a sorted tuple of distinct ints >= 1; ValueError naming `name` otherwise."""
  values = tuple(np.atleast_1d(np.asarray(values, dtype=object)).tolist())
  if not values:
    raise ValueError(f"{name} must hold at least one budget (integers >= 1), got {values!r}")
  return tuple(sorted({check_integer(f"{name} entry", v) for v in values}))


def _judge(stat: dict, criteria: RegimeCriteria) -> dict:
  """`stat` with the ok_* flags and the violation score under `criteria`."""
  lo, hi = criteria.pass1_range
  pass1_miss = max(lo - stat["pass1"], stat["pass1"] - hi, 0.0)
  headroom_miss = max(criteria.min_headroom - stat["headroom"], 0.0)
  hopeless_miss = max(stat["hopeless"] - criteria.max_hopeless, 0.0)
  flags = {"ok_pass1": pass1_miss <= _TOL, "ok_headroom": headroom_miss <= _TOL,
           "ok_hopeless": hopeless_miss <= _TOL,
           "ok_span": stat["difficulties"] >= criteria.min_difficulties}
  # Each shortfall in units of its own threshold, so the three add up on one scale.
  violation = ((not flags["ok_pass1"]) * pass1_miss / (hi - lo)
               + (not flags["ok_headroom"]) * headroom_miss / criteria.min_headroom
               + (not flags["ok_hopeless"]) * hopeless_miss / criteria.max_hopeless)
  return {**stat, **flags, "ok": all(flags.values()), "violation": float(violation)}


def candidate_stats(correct_by_temperature, difficulty_Q, n_max_choices,
                    criteria: RegimeCriteria = RegimeCriteria()) -> list[dict]:
  """Every candidate's measurements and ok_* flags under `criteria`, in (temperature, lo, hi,
  n_max) order.

  `correct_by_temperature`: {temperature: correct_QxN (bool)}, the same Q design questions
  at every temperature, each with its whole pool of N samples. `difficulty_Q`: each question's
  difficulty. N_max runs over `n_max_choices` that are <= N. Each dict: lo, hi, difficulties
  (how many in the run), temperature, n_max, questions, pass1, pass_at_n_max, headroom,
  hopeless (share with no correct sample of N), ok_pass1, ok_headroom, ok_hopeless, ok_span,
  ok, and violation (0 when ok; see `choose_regime`).
  """
  if not isinstance(correct_by_temperature, dict) or not correct_by_temperature:
    raise ValueError("correct_by_temperature must map at least one temperature to correct_QxN")
  difficulty_Q = np.asarray(difficulty_Q)
  if difficulty_Q.ndim != 1 or difficulty_Q.size == 0:
    raise ValueError(f"difficulty_Q must be a non-empty 1-D array, got shape "
                     f"{difficulty_Q.shape}")
  check_difficulties("difficulty_Q", difficulty_Q.tolist())
  pools = {}
  for temperature, correct_QxN in correct_by_temperature.items():
    if not is_number(temperature) or not 0 <= temperature < math.inf:
      raise ValueError(f"correct_by_temperature keys must be temperatures (finite numbers "
                       f">= 0), got {temperature!r}")
    temperature = float(temperature)
    correct_QxN = np.asarray(correct_QxN)
    if correct_QxN.ndim != 2 or correct_QxN.shape[0] != difficulty_Q.size:
      raise ValueError(f"difficulty_Q has {difficulty_Q.size} questions but "
                       f"correct_by_temperature[{temperature}] has shape {correct_QxN.shape}")
    pools[temperature] = correct_QxN
  pools = dict(sorted(pools.items()))
  shapes = {t: c.shape for t, c in pools.items()}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"correct_by_temperature must hold one correct_QxN shape (the same "
                     f"questions and pool at every temperature), got {shapes}")
  pool = next(iter(shapes.values()))[1]
  n_max_choices = _check_n_max_choices("n_max_choices", n_max_choices)
  budgets = [n for n in n_max_choices if n <= pool]
  if not budgets:
    raise ValueError(f"n_max_choices must hold a budget <= the pool size {pool}, got "
                     f"{n_max_choices}")

  drawn = sorted(set(difficulty_Q.tolist()))
  in_d_DxQ = np.stack([difficulty_Q == d for d in drawn]).astype(np.float64)
  count_D = in_d_DxQ.sum(1)
  stats = []
  for temperature, correct_QxN in pools.items():
    pass1_D = in_d_DxQ @ unbiased_pass_at_k(correct_QxN, 1) / count_D
    hopeless_D = in_d_DxQ @ (~correct_QxN.astype(bool).any(1)) / count_D
    pass_n_KxD = [in_d_DxQ @ unbiased_pass_at_k(correct_QxN, n) / count_D for n in budgets]
    for first in range(len(drawn)):
      for last in range(first, len(drawn)):
        run = slice(first, last + 1)
        for n_max, pass_n_D in zip(budgets, pass_n_KxD):
          pass1, pass_n = float(pass1_D[run].mean()), float(pass_n_D[run].mean())
          stats.append(_judge({
              "lo": drawn[first], "hi": drawn[last], "difficulties": last - first + 1,
              "temperature": temperature, "n_max": n_max,
              "questions": int(round(count_D[run].sum())), "pass1": pass1,
              "pass_at_n_max": pass_n,
              "headroom": pass_n - pass1, "hopeless": float(hopeless_D[run].mean()),
          }, criteria))
  return stats


def _preference(stat: dict) -> tuple:
  """Sort key, best first: widest run, smallest N_max, largest headroom, lower temperature,
  lower lo."""
  return (-stat["difficulties"], stat["n_max"], -stat["headroom"], stat["temperature"],
          stat["lo"])


def _reason(stat: dict, criteria: RegimeCriteria) -> str:
  """Each missed criterion with its measured value, joined by '; '."""
  lo, hi = criteria.pass1_range
  misses = []
  if not stat["ok_pass1"]:
    side = "below" if stat["pass1"] < lo else "above"
    misses.append(f"pass@1 {stat['pass1']:.2f} {side} [{lo:.2f}, {hi:.2f}]")
  if not stat["ok_headroom"]:
    misses.append(f"headroom {stat['headroom']:.2f} below {criteria.min_headroom:.2f}")
  if not stat["ok_hopeless"]:
    misses.append(f"hopeless {stat['hopeless']:.2f} above {criteria.max_hopeless:.2f}")
  return "; ".join(misses)


def choose_regime(stats: list[dict], criteria: RegimeCriteria) -> dict:
  """The test regime: the fixed rule applied to `candidate_stats` output.

  Candidates: those spanning >= criteria.min_difficulties difficulties with N_max in
  criteria.n_max_choices, judged afresh under `criteria`. Among those meeting pass1_range,
  min_headroom and max_hopeless, prefer the widest run (most difficulties), then the smallest
  N_max (the cheapest budget with the headroom), then the largest headroom, then the lower
  temperature, then the lower lo. If none meets them all, take the least violation - the sum
  of normalized shortfalls: pass@1's distance outside its range / the range's width, headroom
  shortfall / min_headroom, hopeless excess / max_hopeless - with the same order breaking
  ties, and return it with met=False and a reason naming each missed criterion and its value.
  Returns the candidate's stats plus met and reason ("" when met).
  """
  if not isinstance(criteria, RegimeCriteria):
    raise ValueError(f"criteria must be a RegimeCriteria, got {type(criteria).__name__}")
  judged = [_judge(s, criteria) for s in stats if s["n_max"] in criteria.n_max_choices]
  judged = [s for s in judged if s["ok_span"]]
  if not judged:
    raise ValueError(f"stats hold no candidate spanning >= regime.min_difficulties = "
                     f"{criteria.min_difficulties} difficulties with N_max in "
                     f"regime.n_max_choices = {criteria.n_max_choices}")
  qualified = [s for s in judged if s["ok"]]
  if qualified:
    return {**min(qualified, key=_preference), "met": True, "reason": ""}
  best = min(judged, key=lambda s: (s["violation"], *_preference(s)))
  return {**best, "met": False, "reason": _reason(best, criteria)}


def negative_control(stats: list[dict], temperature: float, n_max: int) -> dict:
  """The stats of the uniform mix of every drawn difficulty at `temperature` and `n_max`."""
  matches = [s for s in stats if math.isclose(s["temperature"], temperature)
             and s["n_max"] == n_max]
  if not matches:
    raise ValueError(f"stats hold no candidate at temperature {temperature} and n_max {n_max}; "
                     f"temperatures: {sorted({s['temperature'] for s in stats})}, n_max: "
                     f"{sorted({s['n_max'] for s in stats})}")
  return dict(max(matches, key=lambda s: s["difficulties"]))


def describe(regime: dict) -> str:
  """One line: the mix, its pass@1, pass@N_max, headroom and hopeless share, and the verdict
  when `regime` came from `choose_regime`."""
  lo, hi, n_max = regime["lo"], regime["hi"], regime["n_max"]
  mix = f"difficulty {lo}" if lo == hi else f"difficulties {lo}-{hi}"
  line = (f"{mix}, temperature {regime['temperature']:g}, N_max {n_max}: "
          f"pass@1 {regime['pass1']:.2f}, pass@{n_max} {regime['pass_at_n_max']:.2f} "
          f"({regime['headroom']:+.2f}), hopeless {regime['hopeless']:.2f}")
  if "met" not in regime:
    return line
  return line + (" (criteria met)" if regime["met"] else f" (not decided: {regime['reason']})")
