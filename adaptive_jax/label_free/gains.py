"""The label-free study's headline, from its results alone: gains over the start policy.

gain = test pass@1 after the last round minus the start policy's, per question, with a paired
bootstrap 90% interval over test questions (`bootstrap`: both policies answer the same
questions, so one resample draws the same questions for both). The label-free arm reported is
the one with the highest validation pass@1 after the last round (a choice made on validation),
among `arms.LABEL_FREE` (not the labelled reference, not the exact step checker). The ratio to
the supervised arm's gain shares the resamples; its interval is given only where at least 95%
of the resamples have a positive supervised gain (a ratio over a denominator near 0 is not an
interval), and is then taken over those.

"Reaches best-of-n": the largest n such that the tuned policy's test pass@1 is at least the
start policy's best-of-k accuracy at every k <= n (None: below the start policy's best-of-1).
"""

import numpy as np

from adaptive_jax import bootstrap
from adaptive_jax.label_free import arms as arms_lib

METRIC = "pass@1"
MIN_POSITIVE_SHARE = 0.95  # of resamples with a positive supervised gain, for a ratio interval


def _per_question(record: dict) -> np.ndarray:
  return np.asarray(record["test"]["per_question"][METRIC], np.float64)


def reaches_best_of_n(accuracy: float, best_of_n: dict, selector: str) -> int | None:
  """The largest n such that `accuracy` is at least the start policy's best-of-k accuracy at
  every k <= n (a curve that falls with k is not reached at its far end alone); None when
  below best-of-1."""
  reached = None
  for k, a in zip(best_of_n["ks"], best_of_n[selector]):
    if a > accuracy + 1e-12:
      break
    reached = k
  return reached


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
  out["gains"] = {a: gain(a)[0] for a in arms}
  label_free = [a for a in arms if a in arms_lib.LABEL_FREE]
  if label_free:
    best = max(label_free, key=lambda a: arms[a][-1]["validation"][METRIC]["value"])
    out["best_arm"] = best
    out["label_free_gain"], lf_R = gain(best)
  if arms_lib.SUPERVISED in arms:
    out["supervised_gain"], sup_R = gain(arms_lib.SUPERVISED)
    if label_free:
      sup = out["supervised_gain"]["value"]
      positive_R = sup_R > 0
      out["ratio"] = {
          "value": out["label_free_gain"]["value"] / sup if sup > 0 else None,
          "interval": (bootstrap.percentile_interval(lf_R[positive_R] / sup_R[positive_R], 0.9)
                       if positive_R.mean() >= MIN_POSITIVE_SHARE else None),
          "note": "value None where the supervised arm did not improve on the start policy; "
                  f"interval None unless {MIN_POSITIVE_SHARE:.0%} of resamples have a positive "
                  "supervised gain"}
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
  out = [f"label-free arm (chosen on validation): {h['best_arm']}",
         f"label_free_gain = {g['value']:.4f} [{g['interval'][0]:.4f}, {g['interval'][1]:.4f}]"]
  ratio = h.get("ratio")
  if ratio is None or ratio["value"] is None:
    out.append("label_free_gain/supervised_gain = not decided (the supervised arm "
               + ("did not run)" if ratio is None else "did not improve on the start policy)"))
  else:
    out.append(f"label_free_gain/supervised_gain = {ratio['value']:.3f}")
  return out
