"""The Brier table of a calibration study's results.json: every method against the base PRM.

The docs hold it between `<!-- <prefix>:brier -->` and `<!-- /<prefix>:brier -->` lines (one
prefix per committed run); `scripts/render_docs.py` rewrites the body from the results file
and tests/test_render_docs.py fails when the committed docs differ from what `render` gives.
"""

# Methods in the order of the table, with their labels.
METHOD_LABELS = (
    ("base", "base PRM (outcome labels, easier questions)"),
    ("calibrated", "calibrated mean (squared-error fine-tune)"),
    ("quantile_median", "quantile median (pinball fine-tune)"),
    ("temperature", "temperature scaling"),
    ("isotonic", "isotonic regression"),
    ("histogram", "histogram binning"),
)
# Predictors that are not PRMs, fit on the calibration records (results["reference"]).
REFERENCE_LABELS = (
    ("difficulty", "reference: the mean target of the record's difficulty"),
    ("difficulty_step", "reference: the mean target of its (difficulty, step)"),
    ("difficulty_step_gold_prefix",
     "reference: the same and whether the prefix follows the gold steps (an oracle)"),
    ("mc_noise_floor", "MC noise floor: the true success rates against the MC targets"),
)


def _ratio(entry: dict | None) -> str:
  if not entry:
    return "1"
  return f"{entry['ratio']:.2f}x [{entry['low']:.2f}, {entry['high']:.2f}]"


def brier_table(results: dict) -> str:
  """Record counts and the validation choice, then one row per method (test Brier, the ratio
  to the base PRM with its 90% question-bootstrap interval, ECE, mean prediction) and the
  reference predictors; then the split-conformal coverage."""
  records, selection = results["num_records"], results["selection"]
  chosen = selection["chosen"]
  lines = [
      f"{records['test']} test records ({records['calibration']} calibration, "
      f"{records['validation']} validation); chosen on validation: the "
      f"`{selection['estimate']}` estimate, calibration learning rate "
      f"{chosen['calibration_learning_rate']:g}, batch {chosen['calibration_batch_size']}.",
      "",
      "| method | Brier | vs base [90%] | ECE | mean prediction |",
      "| --- | --- | --- | --- | --- |",
  ]
  ratios = results["brier_ratio_to_base"]
  for name, label in METHOD_LABELS:
    m = results["methods"][name]
    lines.append(f"| {label} | {m['brier']:.3f} | {_ratio(ratios.get(name))} | {m['ece']:.3f} | "
                 f"{m['mean_prediction']:.2f} |")
  for name, label in REFERENCE_LABELS:
    r = results["reference"].get(name)
    if r:
      lines.append(f"| {label} | {r['brier']:.3f} | {r['ratio_to_base']:.2f}x | | |")
  coverage = results.get("coverage", {})
  if "lower_q0.1_conformal" in coverage:
    lines += ["", f"Split-conformal lower 0.1 quantile: one-sided coverage "
                  f"{coverage['lower_q0.1_conformal']:.2f} of test records, "
                  f"{coverage['lower_q0.1_conformal_questions']:.2f} of test questions "
                  f"(nominal {coverage['conformal_nominal']:.2f}; uncorrected "
                  f"{coverage['lower_q0.1_raw']:.2f})."]
  return "\n".join(lines)


def render(results: dict) -> dict:
  return {"brier": brier_table(results)}
