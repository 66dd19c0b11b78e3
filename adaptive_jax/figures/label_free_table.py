"""Markdown tables of a label-free study's results.json: per arm and round, and the headline."""

from adaptive_jax.label_free import gains


def _cell(metric: dict, digits: int = 3) -> str:
  lo, hi = metric["interval"]
  return f"{metric['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def render(results: dict) -> str:
  """Start policy, then one row per (arm, round): test metrics with 90% intervals, the
  validation pass@1, diversity, the verifier's Brier, the training data's quality, compute."""
  k = results["config"]["eval_samples"]
  head = (f"| arm | round | test pass@1 | test greedy | test pass@{k} | val pass@1 | distinct "
          f"answers | verifier Brier | trained on (correct share) | GFLOPs |")
  rows = [head, "|" + "---|" * 10]

  def row(arm, r, rec, pseudo="", flops=""):
    t = rec["test"]
    return (f"| {arm} | {r} | {_cell(t['pass@1'])} | {_cell(t['greedy_pass@1'])} | "
            f"{_cell(t[f'pass@{k}'])} | {rec['validation']['pass@1']['value']:.3f} | "
            f"{t['distinct_answers']['value']:.2f} | {t['verifier_brier']['value']:.3f} | "
            f"{pseudo} | {flops} |")

  rows.append(row("start policy", 0, results["start"]))
  for arm, records in results["arms"].items():
    for rec in records:
      quality = rec.get("pseudo_labels", {})
      if "chosen_accuracy" in quality:
        pseudo = f"{rec['train_rows']} ({quality['chosen_accuracy']:.2f})"
      elif arm == gains.SUPERVISED:
        pseudo = f"{rec['train_rows']} gold (1.00)"
      else:
        pseudo = f"{rec['train_rows']} samples"
      flops = sum(rec["flops"].values()) / 1e9
      rows.append(row(arm, rec["round"], rec, pseudo, f"{flops:.1f}"))
  bon = results["start"]["best_of_n"]
  curve = ", ".join(f"n={n}: {v:.3f} / {m:.3f}"
                    for n, v, m in zip(bon["ks"], bon["verifier"], bon["majority"]))
  return "\n".join(rows) + f"\n\nStart policy best-of-n on test (verifier / majority): {curve}"
