"""Regime choice on hand-built pools, against a brute-force recomputation with math.comb."""

import math

import numpy as np
import pytest

from adaptive_jax.studies import regime
from adaptive_jax.typed_config import from_mapping


def _pools(counts_by_temperature, n, seed=0):
  """({temperature: correct_QxN}, difficulty_Q) from {temperature: {difficulty: [c per
  question]}}: question q holds exactly c correct samples of n, in shuffled slots."""
  rng = np.random.default_rng(seed)
  correct_by_temperature, difficulty_Q = {}, None
  for temperature, counts in counts_by_temperature.items():
    rows, difficulties = [], []
    for difficulty, cs in counts.items():
      for c in cs:
        rows.append(rng.permutation(np.arange(n) < c))
        difficulties.append(difficulty)
    correct_by_temperature[temperature] = np.stack(rows)
    difficulty_Q = np.array(difficulties)
  return correct_by_temperature, difficulty_Q


# Design A, pools of 64. Temperature 0.5: [1, 3] qualifies at N_max 16 (pass@1
# (1 + 1/2 + 1/8) / 3 = 0.54, pass@16 ~ 0.97, nobody hopeless); every 4-wide run has half of
# d4 (0.125 > 0.10) or all of d5 hopeless. Temperature 1.0: every difficulty holds two solved
# questions and two with 1 of 64 correct, so pass@1 = (2 + 2/64) / 4 = 0.5078 and pass@N =
# (2 + 2 N / 64) / 4: headroom 0.117 at 16, 0.242 at 32, 0.492 at 64; only N_max 64 qualifies,
# and [1, 4] is the widest qualifying run (d5 makes [1, 5] 0.2 hopeless).
_DESIGN_A = {
    0.5: {1: [64] * 4, 2: [32] * 4, 3: [8] * 4, 4: [4, 4, 0, 0], 5: [0] * 4},
    1.0: {1: [64, 64, 1, 1], 2: [64, 64, 1, 1], 3: [64, 64, 1, 1], 4: [64, 64, 1, 1],
          5: [0] * 4},
}


def _pick(stats, **where):
  matches = [s for s in stats if all(s[k] == v for k, v in where.items())]
  assert len(matches) == 1, where
  return matches[0]


def test_defaults_are_the_fixed_criteria():
  criteria = regime.RegimeCriteria()
  assert criteria.pass1_range == (0.3, 0.6)
  assert criteria.min_headroom == 0.25
  assert criteria.max_hopeless == 0.10
  assert criteria.n_max_choices == (16, 32, 64)
  assert criteria.min_difficulties == 2


def test_hand_built_design_widest_range_wins():
  pools, difficulty_Q = _pools(_DESIGN_A, 64)
  stats = regime.candidate_stats(pools, difficulty_Q, (16, 32, 64))
  # 15 runs of 5 difficulties, 2 temperatures, 3 budgets.
  assert len(stats) == 15 * 2 * 3
  chosen = regime.choose_regime(stats, regime.RegimeCriteria())
  assert (chosen["lo"], chosen["hi"], chosen["temperature"], chosen["n_max"]) == (1, 4, 1.0, 64)
  assert chosen["met"] and chosen["reason"] == "" and chosen["violation"] == 0.0
  assert chosen["questions"] == 16
  assert chosen["pass1"] == pytest.approx(0.5078125, abs=1e-12)
  assert chosen["pass_at_n_max"] == pytest.approx(1.0, abs=1e-12)
  assert chosen["headroom"] == pytest.approx(0.4921875, abs=1e-12)
  assert chosen["hopeless"] == 0.0
  assert regime.describe(chosen) == ("difficulties 1-4, temperature 1, N_max 64: pass@1 0.51, "
                                     "pass@64 1.00 (+0.49), hopeless 0.00 (criteria met)")
  # The headroom ladder of temperature 1.0 is the hand-derived one.
  for n_max, headroom in ((16, 0.1171875), (32, 0.2421875)):
    s = _pick(stats, lo=1, hi=4, temperature=1.0, n_max=n_max)
    assert s["headroom"] == pytest.approx(headroom, abs=1e-12) and not s["ok_headroom"]
  hopeless = _pick(stats, lo=1, hi=4, temperature=0.5, n_max=16)
  assert hopeless["hopeless"] == pytest.approx(0.125) and not hopeless["ok_hopeless"]


def test_hand_built_design_without_the_large_budget():
  pools, difficulty_Q = _pools(_DESIGN_A, 64)
  stats = regime.candidate_stats(pools, difficulty_Q, (16, 32, 64))
  criteria = regime.RegimeCriteria(n_max_choices=(16, 32))
  chosen = regime.choose_regime(stats, criteria)
  assert (chosen["lo"], chosen["hi"], chosen["temperature"], chosen["n_max"]) == (1, 3, 0.5, 16)
  assert chosen["met"]
  assert chosen["pass1"] == pytest.approx((1 + 0.5 + 0.125) / 3)


def _brute_force_stats(counts_by_temperature, n, n_max_choices, criteria):
  """Every candidate recomputed from the per-question counts with math.comb."""
  out = {}
  for temperature, counts in counts_by_temperature.items():
    drawn = sorted(counts)
    for i in range(len(drawn)):
      for j in range(i, len(drawn)):
        run = drawn[i:j + 1]
        for n_max in [k for k in n_max_choices if k <= n]:
          def mean_over_run(per_question):
            return sum(sum(per_question(c) for c in counts[d]) / len(counts[d])
                       for d in run) / len(run)
          pass1 = mean_over_run(lambda c: c / n)
          pass_n = mean_over_run(lambda c, k=n_max: 1 - math.comb(n - c, k) / math.comb(n, k))
          hopeless = mean_over_run(lambda c: float(c == 0))
          lo, hi = criteria.pass1_range
          ok = {"ok_pass1": lo <= pass1 <= hi,
                "ok_headroom": pass_n - pass1 >= criteria.min_headroom,
                "ok_hopeless": hopeless <= criteria.max_hopeless,
                "ok_span": len(run) >= criteria.min_difficulties}
          violation = (max(lo - pass1, pass1 - hi, 0) / (hi - lo)
                       + max(criteria.min_headroom - (pass_n - pass1), 0) / criteria.min_headroom
                       + max(hopeless - criteria.max_hopeless, 0) / criteria.max_hopeless)
          out[(run[0], run[-1], temperature, n_max)] = dict(
              questions=sum(len(counts[d]) for d in run), pass1=pass1, pass_at_n_max=pass_n,
              headroom=pass_n - pass1, hopeless=hopeless, ok=all(ok.values()),
              violation=violation, **ok)
  return out


def _brute_force_choice(brute):
  """The rule as successive filters: widest, smallest N_max, largest headroom, lower
  temperature, lower lo."""
  keys = [k for k, v in brute.items() if v["ok"]]
  if not keys:
    return None
  keys = [k for k in keys if k[1] - k[0] == max(k[1] - k[0] for k in keys)]
  keys = [k for k in keys if k[3] == min(k[3] for k in keys)]
  best = max(brute[k]["headroom"] for k in keys)
  keys = [k for k in keys if brute[k]["headroom"] >= best - 1e-12]
  keys = [k for k in keys if k[2] == min(k[2] for k in keys)]
  return min(keys, key=lambda k: k[0])


@pytest.mark.parametrize("seed", range(10))
def test_stats_and_choice_match_brute_force(seed):
  rng = np.random.default_rng(seed)
  n = 16
  sizes = {2: 3, 3: 5, 4: 2, 5: 4}  # unequal, so the uniform mix differs from the pooled mean
  counts = {t: {d: [int(rng.choice([0, 1, 2, 4, 8, 12, 16], p=[.1, .25, .2, .15, .1, .1, .1]))
                    for _ in range(q)] for d, q in sizes.items()} for t in (0.3, 0.9)}
  # Tight enough that seeds differ in the winning width and temperature, and seed 6 has none.
  criteria = regime.RegimeCriteria(pass1_range=(0.3, 0.5), min_headroom=0.3, max_hopeless=0.15,
                                   n_max_choices=(4, 8, 16))
  pools, difficulty_Q = _pools(counts, n, seed=seed)
  stats = regime.candidate_stats(pools, difficulty_Q, (4, 8, 16, 32), criteria)
  brute = _brute_force_stats(counts, n, (4, 8, 16, 32), criteria)
  assert len(stats) == len(brute) == 10 * 2 * 3
  for s in stats:
    expected = brute[(s["lo"], s["hi"], s["temperature"], s["n_max"])]
    assert s["difficulties"] == s["hi"] - s["lo"] + 1
    for key, value in expected.items():
      assert s[key] == pytest.approx(value, abs=1e-12), key
  chosen = regime.choose_regime(stats, criteria)
  key = _brute_force_choice(brute)
  if key is None:
    assert not chosen["met"] and chosen["reason"]
    least = min(v["violation"] for k, v in brute.items() if v["ok_span"] and k[3] <= 16)
    assert chosen["violation"] == pytest.approx(least, abs=1e-12)
  else:
    assert chosen["met"]
    assert (chosen["lo"], chosen["hi"], chosen["temperature"], chosen["n_max"]) == key


def _choose(counts, n=64, criteria=regime.RegimeCriteria()):
  pools, difficulty_Q = _pools(counts, n)
  return regime.choose_regime(regime.candidate_stats(pools, difficulty_Q, (16, 32, 64)),
                              criteria)


def test_ties_prefer_the_smallest_budget_over_more_headroom():
  # pass@1 (2 + 1/8) / 4 = 0.53; headroom 0.31 at 16, 0.47 at 64: 16 still wins.
  chosen = _choose({0.7: {1: [64, 64, 4, 4], 2: [64, 64, 4, 4]}})
  assert chosen["met"] and chosen["n_max"] == 16
  pass16 = (2 + 2 * (1 - math.comb(60, 16) / math.comb(64, 16))) / 4
  assert chosen["headroom"] == pytest.approx(pass16 - 0.53125, abs=1e-12)


def test_ties_prefer_the_largest_headroom_over_the_lower_temperature():
  same_width_and_budget = {0.2: {1: [64, 64, 4, 4], 2: [64, 64, 4, 4]},
                           0.9: {1: [32] * 4, 2: [32] * 4}}
  chosen = _choose(same_width_and_budget)
  assert chosen["met"] and (chosen["temperature"], chosen["n_max"]) == (0.9, 16)
  assert chosen["headroom"] == pytest.approx(0.5, abs=1e-5)


def test_ties_prefer_the_lower_temperature_then_the_lower_lo():
  identical = {0.2: {1: [32] * 4, 2: [32] * 4}, 0.9: {1: [32] * 4, 2: [32] * 4}}
  assert _choose(identical)["temperature"] == 0.2
  # [1, 3] has pass@1 (2 + 1/64) / 3 = 0.67; [1, 2] and [2, 3] are the same mix at N_max 64.
  mirrored = {0.7: {1: [64] * 4, 2: [1] * 4, 3: [64] * 4}}
  chosen = _choose(mirrored)
  assert chosen["met"]
  assert (chosen["lo"], chosen["hi"], chosen["n_max"]) == (1, 2, 64)


def test_min_difficulties_keeps_single_difficulties_out():
  counts = {0.7: {1: [64] * 4, 2: [32] * 4}}  # only difficulty 2 alone has pass@1 in range
  assert not _choose(counts)["met"]
  chosen = _choose(counts, criteria=regime.RegimeCriteria(min_difficulties=1))
  assert chosen["met"] and (chosen["lo"], chosen["hi"]) == (2, 2)
  assert regime.describe(chosen).startswith("difficulty 2, temperature 0.7, N_max 16:")


def test_none_qualifying_returns_the_least_violation_with_a_reason():
  # Every sample of a question is right or every one wrong, so headroom is 0 everywhere.
  # 0.7: pass@1 1, violation (1 - 0.6) / 0.3 + 1 = 2.33. 1.0: pass@1 0.875, hopeless 0.125,
  # violation 0.275 / 0.3 + 1 + 0.025 / 0.1 = 2.17, the least.
  counts = {0.7: {1: [16] * 4, 2: [16] * 4}, 1.0: {1: [16] * 4, 2: [0, 16, 16, 16]}}
  pools, difficulty_Q = _pools(counts, 16)
  stats = regime.candidate_stats(pools, difficulty_Q, (16, 32, 64))
  assert {s["n_max"] for s in stats} == {16}  # budgets above the pool are not candidates
  chosen = regime.choose_regime(stats, regime.RegimeCriteria())
  assert not chosen["met"]
  assert (chosen["lo"], chosen["hi"], chosen["temperature"]) == (1, 2, 1.0)
  assert chosen["violation"] == pytest.approx(0.275 / 0.3 + 1 + 0.25)
  assert _pick(stats, lo=1, hi=2, temperature=0.7)["violation"] == pytest.approx(0.4 / 0.3 + 1)
  assert chosen["reason"] == ("pass@1 0.88 above [0.30, 0.60]; headroom 0.00 below 0.25; "
                              "hopeless 0.12 above 0.10")
  assert regime.describe(chosen).endswith(f"(not decided: {chosen['reason']})")


def test_reason_names_only_the_missed_criteria():
  # pass@1 1/64 per question: below the range; pass@64 = 1 gives headroom, nobody hopeless.
  chosen = _choose({0.7: {1: [1] * 4, 2: [1] * 4}})
  assert not chosen["met"]
  assert chosen["reason"] == "pass@1 0.02 below [0.30, 0.60]"


def test_negative_control_is_the_full_range():
  pools, difficulty_Q = _pools(_DESIGN_A, 64)
  stats = regime.candidate_stats(pools, difficulty_Q, (16, 32, 64))
  control = regime.negative_control(stats, 0.5, 16)
  assert (control["lo"], control["hi"], control["temperature"], control["n_max"]) == (1, 5, 0.5,
                                                                                      16)
  assert control["questions"] == 20
  assert control["pass1"] == pytest.approx((1 + 0.5 + 0.125 + 0.03125) / 5)
  assert control["hopeless"] == pytest.approx(0.3)
  assert regime.describe(control) == ("difficulties 1-5, temperature 0.5, N_max 16: pass@1 0.33, "
                                      f"pass@16 {control['pass_at_n_max']:.2f} "
                                      f"({control['headroom']:+.2f}), hopeless 0.30")
  with pytest.raises(ValueError, match="n_max 8"):
    regime.negative_control(stats, 0.5, 8)


@pytest.mark.parametrize("fields, name", [
    ({"pass1_range": (0.6, 0.3)}, "regime.pass1_range"),
    ({"pass1_range": (0.3, 1.2)}, "regime.pass1_range"),
    ({"pass1_range": (-0.1, 0.5)}, "regime.pass1_range"),
    ({"pass1_range": (0.3,)}, "regime.pass1_range"),
    ({"pass1_range": 0.3}, "regime.pass1_range"),
    ({"n_max_choices": ()}, "regime.n_max_choices"),
    ({"n_max_choices": (16, 0)}, "regime.n_max_choices"),
    ({"n_max_choices": (16, -32)}, "regime.n_max_choices"),
    ({"min_headroom": 0.0}, "regime.min_headroom"),
    ({"max_hopeless": 1.5}, "regime.max_hopeless"),
    ({"min_difficulties": 0}, "regime.min_difficulties"),
    ({"min_difficulties": 9}, "regime.min_difficulties"),
    ({"pass1_rng": (0.3, 0.6)}, "regime config fields"),
])
def test_criteria_validation_names_the_field(fields, name):
  with pytest.raises(ValueError, match=name.replace(".", r"\.")):
    from_mapping(regime.RegimeCriteria, fields, "regime")


def test_candidate_stats_validation_names_the_field():
  pools, difficulty_Q = _pools({0.5: {1: [2] * 3, 2: [1] * 3}, 1.0: {1: [2] * 3, 2: [1] * 3}}, 8)
  with pytest.raises(ValueError, match="correct_by_temperature must hold one correct_QxN shape"):
    regime.candidate_stats({0.5: pools[0.5], 1.0: pools[1.0][:, :4]}, difficulty_Q, (4,))
  with pytest.raises(ValueError, match="difficulty_Q has 5 questions"):
    regime.candidate_stats(pools, difficulty_Q[:5], (4,))
  with pytest.raises(ValueError, match="difficulty_Q entry"):
    regime.candidate_stats(pools, difficulty_Q + 7, (4,))
  with pytest.raises(ValueError, match="n_max_choices"):
    regime.candidate_stats(pools, difficulty_Q, ())
  with pytest.raises(ValueError, match="n_max_choices"):
    regime.candidate_stats(pools, difficulty_Q, (0, 4))
  with pytest.raises(ValueError, match="pool size 8"):
    regime.candidate_stats(pools, difficulty_Q, (16, 32))
  with pytest.raises(ValueError, match="correct_by_temperature"):
    regime.candidate_stats({}, difficulty_Q, (4,))
  with pytest.raises(ValueError, match="temperatures"):
    regime.candidate_stats({-1.0: pools[0.5]}, difficulty_Q, (4,))
  stats = regime.candidate_stats(pools, difficulty_Q, (4,))
  with pytest.raises(ValueError, match="regime.min_difficulties"):
    regime.choose_regime([s for s in stats if s["lo"] == s["hi"]], regime.RegimeCriteria())
