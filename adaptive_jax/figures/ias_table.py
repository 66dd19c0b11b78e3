"""The IAS tables of docs/ias.md and the README, rendered from an IAS study's results.json.

The docs hold each table between `<!-- ias:<name> -->` and `<!-- /ias:<name> -->` lines;
`scripts/render_docs.py` rewrites them from the committed results file and a test checks
that the committed docs equal what `render` gives.
"""

from adaptive_jax.figures import doc_blocks

TABLES = ("headline", "tiers", "beams")  # docs/ias.md; the README holds "brief"
# Methods of the headline table in order, with their labels.
METHOD_LABELS = (
    ("ias", "IAS, paper rule (q, cap, estimate chosen on validation)"),
    ("offline", "budget-aware, offline greedy on p(1-p)^n"),
    ("online", "budget-aware, online in the loop (selector's score posterior; budget and cap "
                "chosen on validation)"),
    ("probe_confidence", "probe IAS: first sample's confidence"),
    ("probe_combined", "probe IAS: first sample's confidence + PRM + prior"),
    ("adaptive_consistency", "Adaptive-Consistency (vs majority vote)"),
    ("deepconf_low", "DeepConf-online low (confidence vote; vs majority vote)"),
    ("deepconf_high", "DeepConf-online high (confidence vote; vs majority vote)"),
)
CHANNEL_LABELS = {
    "rule": "rule verifier (exact step checker; stand-in for a perfect PRM)",
    "verifier_last": "learned step verifier, last step",
    "verifier_min": "learned step verifier, minimum over steps",
    "calibrated_last": "calibrated PRM, last step",
    "calibrated_min": "calibrated PRM, minimum over steps",
    "base_last": "base PRM, last step",
    "base_min": "base PRM, minimum over steps",
    "likelihood": "the policy's own likelihood of the sample (geometric-mean token probability)",
}


def _interval(low, high) -> str:
  return f"[{low:.2f}, {high:.2f}]"


def _ratio(matched: dict | None) -> str:
  if not matched:
    return ""
  text = f"{matched['ratio']:.2f} {_interval(*matched['interval'])}"
  return text + " (above every fixed N)" if matched["above_curve"] else text


def _gain(matched: dict | None) -> str:
  """Accuracy minus the fixed curve's at the method's FLOPs, with its interval."""
  if not matched or "accuracy_gain_interval" not in matched:
    return ""
  lo, hi = matched["accuracy_gain_interval"]
  return f"{matched['accuracy_gain_at_equal_flops']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _row(label: str, m: dict, *, ratio: bool = True) -> str:
  interval = m.get("accuracy_interval")
  accuracy = f"{m['accuracy']:.3f}" + (f" {_interval(*interval)}" if interval else "")
  return (f"| {label} | {accuracy} | {m['samples']:.1f} | {m['flops'] / 1e9:.2f} | "
          f"{_ratio(m.get('matched')) if ratio else ''} | "
          f"{_ratio(m.get('matched_best_fixed')) if ratio else ''} | "
          f"{_gain(m.get('matched')) if ratio else ''} |")


# The README's brief table: the allocation families and the control's IAS.
BRIEF = ("ias", "offline", "online")


def design_samples(results: dict) -> str:
  """' (64 samples each)' where the design pools differ in size from the test pools."""
  samples = results.get("design_samples")
  pool = max(int(n) for n in results["test"]["fixed"])
  return f" ({samples} samples each)" if samples and samples != pool else ""


def headline(results: dict, brief: bool = False) -> str:
  """Regime, control, and every method's test accuracy, samples, GFLOPs and matched ratios;
  `brief`: the BRIEF methods and the control's IAS only, and the verdict without the notes."""
  chosen, aggregation, n = results["regime"], results["aggregation"], results["match_n"]
  test, fixed = results["test"], results["test"]["fixed"]
  sizes = results["num_questions"]
  verdict = "criteria met" if chosen["met"] else f"not decided: {chosen['reason']}"
  ns = sorted(fixed, key=int)
  lines = [
      f"Regime chosen on {sizes['design']} design questions"
      f"{design_samples(results)}: {chosen['described']}. "
      f"Control: {chosen['control_described']}. {sizes['test']} test questions "
      f"({sizes['validation']} validation, {sizes['control']} control), "
      f"{ns[-1]} samples each; selection by `{aggregation}` (chosen on validation).",
      "",
      "| method | accuracy [90%] | samples | GFLOPs | FLOPs / fixed N, same selector [90%] "
      "| FLOPs / cheapest fixed method [90%] | accuracy - fixed N's at equal FLOPs [90%] |",
      "| --- | --- | --- | --- | --- | --- | --- |",
      _row(f"fixed N = 1, {aggregation}", fixed[ns[0]][aggregation], ratio=False),
      _row(f"fixed N = {n}, {aggregation} (validation accuracy "
           f"{results['validation_accuracy_floor']:.3f}: the bar a setting must reach)",
           fixed[str(n)][aggregation], ratio=False),
      _row(f"fixed N = {n}, majority vote", fixed[str(n)]["majority"], ratio=False),
      _row(f"coverage at N = {ns[-1]} (perfect selector, an oracle)", fixed[ns[-1]]["coverage"],
           ratio=False),
  ]
  labels = dict(METHOD_LABELS)
  names = [n for n, _ in METHOD_LABELS if n in test["methods"]] + sorted(
      set(test["methods"]) - set(labels))
  lines += [_row(labels.get(name, name), test["methods"][name]) for name in names
            if not brief or name in BRIEF]
  control = (("ias", "control: IAS"),) + (() if brief else (("online",
                                                             "control: budget-aware online"),))
  for name, label in control:
    if name in results.get("control", {}).get("methods", {}):
      lines.append(_row(label, results["control"]["methods"][name]))
  lines += ["", f"Regime verdict: {verdict}."]
  if brief:
    return "\n".join(lines)
  lines[-1] += (" The cheapest fixed method is the lower envelope of every fixed-N curve but the "
                "perfect selector's and the rule verifier's; the control rows are matched to the "
                "control's own curves.")
  sizing = results.get("sizing")
  if sizing:
    lines[-1] += (f" Sizing from validation: the IAS log ratio's 90% half-width is "
                  f"{sizing['validation_log_ratio_halfwidth']:.2f} there, about "
                  f"{sizing['predicted_test_log_ratio_halfwidth']:.2f} expected on "
                  f"{sizes['test']} test questions; +-0.2 needs about "
                  f"{sizing['test_questions_for_halfwidth_0.2']} test questions.")
  return "\n".join(lines)


def tiers(results: dict) -> str:
  """Each selector's within-difficulty AUC and its test accuracy along the fixed curve."""
  t = results["tiers"]
  ks = t["ks"]
  header = " | ".join(f"N = {k}" for k in ks)
  lines = [f"| selector | AUC within difficulty | {header} |",
           "| --- | --- | " + " | ".join("---" for _ in ks) + " |"]
  accuracy = t["accuracy"]
  lines.append("| coverage (perfect selector, an oracle) | | "
               + " | ".join(f"{a:.3f}" for a in accuracy["coverage"]) + " |")
  for name, values in accuracy.items():
    if name == "coverage":
      continue
    channel = name.partition(":")[2]
    auc = t["auc_within_difficulty"].get(channel)
    label = ("majority vote" if name == "majority" else
             f"{'best of N' if name.startswith('best') else 'weighted vote'}: "
             f"{CHANNEL_LABELS.get(channel, channel)}")
    lines.append(f"| {label} | {'' if auc is None else f'{auc:.3f}'} | "
                 + " | ".join(f"{a:.3f}" for a in values) + " |")
  return "\n".join(lines)


def beams(results: dict) -> str:
  """Step-level beam search: fixed (K, M) searches and IAS-of-K / IAS-of-M."""
  beam = results.get("beam")
  if not beam:
    return "No beam search in this run."
  lines = [f"Beam search on the first {beam['questions']} test questions:", "",
           "| search | accuracy [90%] | generations | GFLOPs | FLOPs / fixed search at matched "
           "accuracy [90%] |", "| --- | --- | --- | --- | --- |"]
  for name, m in beam["variants"].items():
    interval = _interval(*m["accuracy_interval"])
    lines.append(f"| {name} | {m['accuracy']:.3f} {interval} | {m['samples']:.1f} | "
                 f"{m['flops'] / 1e9:.2f} | {_ratio(m.get('matched'))} |")
  return "\n".join(lines)


def render(results: dict) -> dict:
  return {"headline": headline(results), "brief": headline(results, brief=True),
          "tiers": tiers(results), "beams": beams(results)}


def replace_blocks(text: str, blocks: dict, prefix: str = "ias") -> str:
  """`text` with each `<!-- prefix:name -->` ... `<!-- /prefix:name -->` block's body replaced
  (one prefix per rendered run)."""
  return doc_blocks.replace_blocks(text, blocks, prefix=prefix)
