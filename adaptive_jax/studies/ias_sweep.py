"""The IAS evaluation from pools: choices on validation, test read once, headline ratios.

`evaluate(validation, test, control, settings)` is the one computation behind both the study's
results.json and `benchmarks.ias --pools`: given three `ias_eval.PoolSplit`s (the regime's
validation and test questions, and the uniform-mix control's test questions) it

1. draws fixed-N curves (random orders) for every aggregation and coverage;
2. on validation: picks the aggregation (best mean accuracy over the fixed sweep among
   `settings.aggregations`), then per family (IAS, offline budget, online budget) the
   cheapest setting whose accuracy reaches the fixed curve's at N = `settings.match_n`;
3. on test (once): runs every setting of every family (the curves) and matches the chosen
   ones against the fixed curve with a paired bootstrap over questions;
4. on the control: the chosen IAS and online settings, matched the same way.

The online allocator reads a sample's score as the chance it is correct. Under
`online_calibrated` its channel is first mapped to that chance by an isotonic fit of
correctness on the channel over every validation sample (`calibrated_channel`; a monotone map,
so no selection changes), and the mapped channel is appended to every split as
"<channel>_calibrated": a likelihood or an uncalibrated verifier score becomes a probability.
"""

import dataclasses
import itertools

import numpy as np

from adaptive_jax.allocation.online import BudgetAllocation
from adaptive_jax.prm import calibration, step_verifier
from adaptive_jax.sampler import selection
from adaptive_jax.scaling import matched
from adaptive_jax.studies import ias_eval


@dataclasses.dataclass(frozen=True)
class SweepSettings:
  """What the evaluation sweeps and how it chooses (from IasConfig and the regime)."""
  fixed_ns: tuple[int, ...]
  orders: int
  aggregations: tuple[str, ...]  # every aggregation reported (fixed curves)
  candidates: tuple[str, ...]  # those the validation choice ranges over
  qs: tuple[float, ...]
  ias_n_maxes: tuple[int, ...]
  ias_estimates: tuple[str, ...]
  budgets: tuple[float, ...]  # samples per question on average
  online_channel: str  # a channel, or SELECTED: the channel of the chosen aggregation
  online_solved_at: tuple[float, ...]
  online_hopeless_below: float
  online_prior_strength: float
  online_estimate: str
  match_n: int
  per_round: int
  rows: int
  resamples: int
  seed: int
  online_calibrated: bool = False  # map online_channel to P(correct) on validation first
  online_n_maxes: tuple[int, ...] = ()  # caps on one question's samples; (): the pool's size


SELECTED = "selected"


def online_channel(s: SweepSettings, aggregation: str) -> str:
  """The channel the online allocator reads: s.online_channel, or under SELECTED the channel
  of `aggregation` ("best:<c>" or "vote:<c>")."""
  if s.online_channel != SELECTED:
    return s.online_channel
  if ":" not in aggregation:
    raise ValueError(f"online_channel={SELECTED!r} needs an aggregation that reads a channel "
                     f"('best:<c>' or 'vote:<c>'), got {aggregation!r}")
  return aggregation.split(":", 1)[1]


def calibrated_channel(validation: ias_eval.PoolSplit, channel: str):
  """The isotonic map from `channel`'s score to the chance a sample is correct, fit on every
  sample of the validation pool."""
  scores = np.asarray(validation.pool.scores_QxNxC)[..., validation.channels.index(channel)]
  return calibration.IsotonicCalibration.fit(scores.ravel(),
                                             validation.correct_QxN.ravel().astype(float))


def with_channel(split: ias_eval.PoolSplit, name: str, scores_QxN) -> ias_eval.PoolSplit:
  """`split` with one more score channel, `name`, appended last."""
  scores = np.concatenate([np.asarray(split.pool.scores_QxNxC),
                           np.asarray(scores_QxN, np.float32)[..., None]], -1)
  return dataclasses.replace(split, pool=split.pool._replace(scores_QxNxC=scores),
                             channels=(*split.channels, name))


def _ias_settings(s: SweepSettings):
  return [{"estimate": e, "q": q, "n_max": n}
          for e, q, n in itertools.product(s.ias_estimates, s.qs, s.ias_n_maxes)]


def _offline_settings(s: SweepSettings):
  return [{"estimate": e, "per_question": b} for e, b in itertools.product(s.ias_estimates,
                                                                          s.budgets)]


def _online_settings(s: SweepSettings):
  """Budget x solved_at x cap; a cap (as IAS's n_max) keeps the allocator from pouring the
  budget into a few questions whose selector gains nothing past it. No caps: the pool's size."""
  caps = s.online_n_maxes or (None,)
  return [{"per_question": b, "solved_at": t, **({} if n is None else {"n_max": n})}
          for b, t, n in itertools.product(s.budgets, s.online_solved_at, caps)]


def _run(split: ias_eval.PoolSplit, family: str, setting: dict, aggregation: str,
         s: SweepSettings) -> ias_eval.MethodRun:
  n = split.num_samples
  loop = {"per_round": s.per_round, "rows": s.rows}
  if family == "ias":
    target_Q = ias_eval.ias_targets(split.estimates[setting["estimate"]], q=setting["q"],
                                    n_max=min(setting["n_max"], n))
    return ias_eval.run_method(split, aggregation, target_Q=target_Q, **loop)
  if family == "offline":
    target_Q = ias_eval.offline_targets(split.estimates[setting["estimate"]],
                                        per_question=setting["per_question"], n_max=n)
    return ias_eval.run_method(split, aggregation, target_Q=target_Q, **loop)
  num_q = len(split.gold_Q)
  allocation = BudgetAllocation(
      budget=max(int(round(setting["per_question"] * num_q)), num_q),
      channel=split.channels.index(s.online_channel), solved_at=setting["solved_at"],
      hopeless_below=s.online_hopeless_below, prior_strength=s.online_prior_strength)
  target_Q = np.full(num_q, min(setting.get("n_max", n), n), np.int32)
  return ias_eval.run_method(split, aggregation, allocation=allocation, target_Q=target_Q,
                             prior_Q=split.estimates[s.online_estimate], **loop)


_FAMILIES = {"ias": _ias_settings, "offline": _offline_settings, "online": _online_settings}


def fixed_table(curves: dict) -> dict:
  """{N: {aggregation: {accuracy, flops, samples, coverage}}} from `fixed_curves` output."""
  table = {}
  coverage = curves["coverage"]
  for i, k in enumerate(coverage["ks"]):
    table[str(k)] = {name: {"accuracy": float(c["correct_KxQ"][i].mean()),
                            "flops": float(c["flops_KxQ"][i].mean()), "samples": k,
                            "coverage": float(coverage["correct_KxQ"][i].mean())}
                     for name, c in curves.items()}
  return table


def best_fixed_curve(curves: dict, channels) -> dict:
  """Every realizable fixed-N point together (all aggregations but the perfect selector and
  the rule verifier): matched on it, a method meets the cheapest fixed method at its accuracy."""
  names = [name for name in curves if name != "coverage"
           and not (name != "majority" and name.partition(":")[2].startswith("rule"))]
  return {"correct_KxQ": np.concatenate([curves[n]["correct_KxQ"] for n in names]),
          "flops_KxQ": np.concatenate([curves[n]["flops_KxQ"] for n in names]),
          "names": names}


def _mean_accuracy(curve: dict) -> float:
  return float(curve["correct_KxQ"].mean())


def evaluate(validation: ias_eval.PoolSplit, test: ias_eval.PoolSplit,
             control: ias_eval.PoolSplit | None, s: SweepSettings) -> dict:
  """Results (JSON-ready) of the whole evaluation; see the module docstring."""
  curve = lambda split: ias_eval.fixed_curves(split, [k for k in s.fixed_ns
                                                      if k <= split.num_samples],
                                              s.aggregations, orders=s.orders, seed=s.seed)
  val_curves = curve(validation)
  aggregation = max(s.candidates, key=lambda a: (_mean_accuracy(val_curves[a]), a))
  s = dataclasses.replace(s, online_channel=online_channel(s, aggregation))
  scored_channels = test.channels  # the pools' own, before any appended for the allocator
  if s.online_calibrated:
    to_probability = calibrated_channel(validation, s.online_channel)
    name = f"{s.online_channel}_calibrated"
    calibrate = lambda split: split and with_channel(split, name, to_probability(
        np.asarray(split.pool.scores_QxNxC)[..., split.channels.index(s.online_channel)]))
    validation, test, control = calibrate(validation), calibrate(test), calibrate(control)
    s = dataclasses.replace(s, online_channel=name)
  floor = ias_eval.fixed_accuracy_at(val_curves[aggregation], s.match_n)
  chosen, val_sweeps = {}, {}
  for family, settings_of in _FAMILIES.items():
    settings = settings_of(s)
    runs = [_run(validation, family, setting, aggregation, s).summary(validation.difficulty_Q)
            for setting in settings]
    val_sweeps[family] = [{**setting, **run} for setting, run in zip(settings, runs)]
    chosen[family] = settings[ias_eval.choose_setting(runs, floor)]

  # Sizing: the chosen IAS setting's log-ratio interval on validation, scaled as 1/sqrt(Q).
  val_ias = _run(validation, "ias", chosen["ias"], aggregation, s)
  halfwidth = ias_eval.match(val_curves[aggregation], val_ias, resamples=s.resamples,
                             seed=s.seed)["log_ratio_halfwidth"]
  num_val, num_test = len(validation.gold_Q), len(test.gold_Q)
  sizing = {"validation_log_ratio_halfwidth": halfwidth,
            "predicted_test_log_ratio_halfwidth": halfwidth * np.sqrt(num_val / num_test),
            "test_questions_for_halfwidth_0.2": int(np.ceil(num_val * (halfwidth / 0.2) ** 2))}
  test_curves = curve(test)
  best_test = best_fixed_curve(test_curves, test.channels)
  results = {"aggregation": aggregation, "online_channel": s.online_channel,
             "match_n": s.match_n, "sizing": sizing,
             "validation_accuracy_floor": floor, "chosen": chosen,
             "validation": {"fixed": fixed_table(val_curves), "sweeps": val_sweeps},
             "test": {"fixed": fixed_table(test_curves), "sweeps": {}, "methods": {}},
             "headline": {}}
  for family, settings_of in _FAMILIES.items():
    points = []
    for setting in settings_of(s):
      run = _run(test, family, setting, aggregation, s)
      point = {**setting, **run.summary(test.difficulty_Q)}
      if setting == chosen[family]:
        point["matched"] = ias_eval.match(test_curves[aggregation], run,
                                          resamples=s.resamples, seed=s.seed)
        point["matched_to"] = f"fixed N, {aggregation}"
        point["matched_best_fixed"] = ias_eval.match(best_test, run, resamples=s.resamples,
                                                     seed=s.seed)
        point["accuracy_interval"] = ias_eval.accuracy_interval(run.correct_Q, s.resamples,
                                                                s.seed)
        results["test"]["methods"][family] = point
      points.append(point)
    results["test"]["sweeps"][family] = points
  results["headline"]["ias"] = results["test"]["methods"]["ias"]["matched"]
  results["headline"]["budget"] = results["test"]["methods"]["online"]["matched"]
  results["best_fixed"] = {"aggregations": best_test["names"],
                           **{family: results["test"]["methods"][family]["matched_best_fixed"]
                              for family in _FAMILIES}}
  if control is not None:
    control_curves = curve(control)
    results["control"] = {"fixed": fixed_table(control_curves), "methods": {}}
    for family in ("ias", "online"):
      run = _run(control, family, chosen[family], aggregation, s)
      results["control"]["methods"][family] = {
          **chosen[family], **run.summary(control.difficulty_Q),
          "accuracy_interval": ias_eval.accuracy_interval(run.correct_Q, s.resamples, s.seed),
          "matched": ias_eval.match(control_curves[aggregation], run, resamples=s.resamples,
                                    seed=s.seed)}
    results["headline"]["ias_control"] = results["control"]["methods"]["ias"]["matched"]
  results["tiers"] = tiers(test, test_curves, scored_channels)
  return results


HEADLINE_LINES = (("ias_flops/fixed_flops_at_matched_accuracy", "ias"),
                  ("budget_flops/fixed_flops_at_matched_accuracy", "budget"),
                  ("ias_flops/fixed_flops_at_matched_accuracy_control", "ias_control"))


def headline_lines(results: dict) -> list[str]:
  """The benchmark's ratio lines, `r [lo, hi]`, from `evaluate`'s results."""
  return [matched.ratio_line(name, results["headline"][key]) for name, key in HEADLINE_LINES
          if key in results["headline"]]


def gain_lines(results: dict) -> list[str]:
  """Each headline method's accuracy minus fixed N's (same selector) at equal FLOPs, `+g [lo, hi]`:
  where the fixed curve is flat this difference stays decisive while the ratio swings."""
  return [matched.gain_line(name.replace("flops/fixed_flops_at_matched_accuracy",
                                         "accuracy-fixed_accuracy_at_equal_flops"),
                            results["headline"][key])
          for name, key in HEADLINE_LINES if key in results["headline"]]


def best_fixed_lines(results: dict) -> list[str]:
  """Each family's ratio against the cheapest fixed method at its accuracy (any aggregation)."""
  return [matched.ratio_line(f"{family}_flops/best_fixed_flops_at_matched_accuracy",
                             results["best_fixed"][family]) for family in _FAMILIES]


def tiers(split: ias_eval.PoolSplit, curves: dict, channels=None) -> dict:
  """Each selector's test accuracy along the fixed curve (coverage: the perfect selector, an
  oracle) and each score channel's (of `channels`, by default all) within-difficulty AUC of
  correct vs wrong answered samples."""
  answered_QxN = np.asarray(split.pool.answers_QxN) != selection.NO_ANSWER
  correct_QxN = split.correct_QxN
  difficulty_QxN = np.broadcast_to(split.difficulty_Q[:, None], correct_QxN.shape)
  scores_QxNxC = np.asarray(split.pool.scores_QxNxC)
  # Samples with an answer: a sample that never answers is wrong whatever its score says.
  auc = {name: step_verifier.within_difficulty_auc(
      scores_QxNxC[..., c][answered_QxN], correct_QxN[answered_QxN],
      difficulty_QxN[answered_QxN])["pooled"]
      for name, c in ((n, split.channels.index(n)) for n in channels or split.channels)}
  ks = curves["coverage"]["ks"]
  return {"ks": list(ks), "auc_within_difficulty": auc,
          "accuracy": {name: [float(x) for x in c["correct_KxQ"].mean(1)]
                       for name, c in curves.items()}}
