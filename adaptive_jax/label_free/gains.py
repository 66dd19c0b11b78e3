"""The label-free study's headline, from its results alone: gains over the start policy.

gain = test pass@1 after the last round minus the start policy's, per question, with a paired
bootstrap 90% interval over test questions (`bootstrap`: both policies answer the same
questions, so one resample draws the same questions for both). The label-free arm reported is
the one with the highest validation pass@1 after the last round (a choice made on validation),
among the arms that are neither labelled (supervised) nor the exact step checker.
The ratio to the supervised arm's gain shares the resamples.

"Reaches best-of-n": the largest n at which the start policy's best-of-n accuracy on test is
at most the tuned policy's pass@1 (None: below the start policy's pass@1 itself).
"""

import numpy as np

from adaptive_jax import bootstrap

SUPERVISED = "supervised"
# Reference arms, never the reported label-free arm: gold labels, and the exact step checker.
REFERENCES = (SUPERVISED, "rule_best_of_n")
METRIC = "pass@1"


def _per_question(record: dict) -> np.ndarray:
  return np.asarray(record["test"]["per_question"][METRIC], np.float64)


def reaches_best_of_n(accuracy: float, best_of_n: dict, selector: str) -> int | None:
  reached = [k for k, a in zip(best_of_n["ks"], best_of_n[selector]) if a <= accuracy + 1e-12]
  return max(reached) if reached else None


def headline(results: dict) -> dict:
  """{'best_arm', 'label_free_gain', 'supervised_gain', 'ratio', 'reaches'} (see the doc)."""
  cfg, arms = results["config"], results["arms"]
  start_Q = np.asarray(results["start"]["test"]["per_question"][METRIC], np.float64)
  counts_RxQ = bootstrap.resample_counts(len(start_Q), resamples=cfg["bootstrap_resamples"],
                                         seed=cfg["seed"])

  def gain(arm: str):
    diff_Q = _per_question(arms[arm][-1]) - start_Q
    resampled_R = counts_RxQ @ diff_Q / len(diff_Q)
    return ({"value": float(diff_Q.mean()),
             "interval": bootstrap.percentile_interval(resampled_R, 0.9)}, resampled_R)

  out = {"metric": f"test {METRIC} after round {cfg['rounds']} minus the start policy's",
         "chosen_on": f"validation {METRIC} after the last round"}
  label_free = [a for a in arms if a not in REFERENCES]
  if label_free:
    best = max(label_free, key=lambda a: arms[a][-1]["validation"][METRIC]["value"])
    out["best_arm"] = best
    out["label_free_gain"], lf_R = gain(best)
    out["gains"] = {a: gain(a)[0] for a in arms}
  if SUPERVISED in arms:
    out["supervised_gain"], sup_R = gain(SUPERVISED)
    if label_free:
      sup = out["supervised_gain"]["value"]
      ok_R = sup_R > 0
      out["ratio"] = {
          "value": out["label_free_gain"]["value"] / sup if sup > 0 else None,
          "interval": (bootstrap.percentile_interval(lf_R[ok_R] / sup_R[ok_R], 0.9)
                       if ok_R.mean() > 0.5 else None),
          "note": "None where the supervised arm did not improve on the start policy"}
  bon = results["start"]["best_of_n"]
  out["reaches"] = {a: {"pass@1": arms[a][-1]["test"][METRIC]["value"],
                        **{s: reaches_best_of_n(arms[a][-1]["test"][METRIC]["value"], bon, s)
                           for s in ("verifier", "majority")}} for a in arms}
  return out


def lines(results: dict) -> list[str]:
  """The report's last lines (benchmarks/label_free.py)."""
  h = results["headline"] if "headline" in results else headline(results)
  if "label_free_gain" not in h:
    return ["label_free_gain = not decided (no label-free arm ran)"]
  g = h["label_free_gain"]
  out = [f"label_free_gain = {g['value']:.4f} [{g['interval'][0]:.4f}, {g['interval'][1]:.4f}]"
         f"  # {h['best_arm']}, chosen on validation"]
  ratio = h.get("ratio")
  if ratio is None or ratio["value"] is None:
    out.append("label_free_gain/supervised_gain = not decided (the supervised arm "
               + ("did not run)" if ratio is None else "did not improve on the start policy)"))
  else:
    out.append(f"label_free_gain/supervised_gain = {ratio['value']:.3f}")
  return out
