"""Markdown tables of a label-free study's results.json: per arm and round, and the brief.

docs/label_free.md holds `<!-- label_free:rounds -->` ... `<!-- /label_free:rounds -->` and the
README `<!-- label_free:brief -->` ...; `scripts/render_docs.py` rewrites them from the
committed results file and a test checks that the committed docs equal what `render` gives.
"""

from adaptive_jax.figures import doc_blocks
from adaptive_jax.label_free import arms as arms_lib
from adaptive_jax.label_free import gains


def _cell(metric: dict, digits: int = 3) -> str:
  lo, hi = metric["interval"]
  return f"{metric['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def rounds_table(results: dict) -> str:
  """Start policy, then one row per (arm, round): test metrics with 90% intervals, the
  validation pass@1, diversity, the verifier's Brier, the training data's quality, compute."""
  k = results["config"]["eval_samples"]
  head = (f"| arm | round | test pass@1 | test greedy | test pass@{k} | val pass@1 | distinct "
          f"answers | reward Brier | trained on (correct share) | GFLOPs this round |")
  rows = [head, "|" + "---|" * 10]

  def row(arm, r, rec, pseudo="", flops=""):
    t = rec["test"]
    return (f"| {arm} | {r} | {_cell(t['pass@1'])} | {_cell(t['greedy_pass@1'])} | "
            f"{_cell(t[f'pass@{k}'])} | {rec['validation']['pass@1']['value']:.3f} | "
            f"{t['distinct_answers']['value']:.2f} | {t['reward_brier']['value']:.3f} | "
            f"{pseudo} | {flops} |")

  rows.append(row("start policy", 0, results["start"]))
  for arm, records in results["arms"].items():
    for rec in records:
      quality = rec.get("pseudo_labels", {})
      if "chosen_accuracy" in quality:
        pseudo = f"{rec['train_rows']} ({quality['chosen_accuracy']:.2f})"
      elif arm == arms_lib.SUPERVISED:
        pseudo = f"{rec['train_rows']} gold (1.00)"
      else:
        pseudo = f"{rec['train_rows']} samples"
      flops = sum(rec["flops"].values()) / 1e9
      rows.append(row(arm, rec["round"], rec, pseudo, f"{flops:.1f}"))
  bon = results["start"]["best_of_n"]
  curve = ", ".join(f"n={n}: {v:.3f} / {m:.3f}"
                    for n, v, m in zip(bon["ks"], bon["verifier"], bon["majority"]))
  return "\n".join(rows) + f"\n\nStart policy best-of-n on test (verifier / majority): {curve}"


def _signed(metric: dict) -> str:
  lo, hi = metric["interval"]
  return f"{metric['value']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def reach_text(n) -> str:
  return "below n = 1" if n is None else f"n = {n}"


def brief(results: dict) -> str:
  """One row per arm after the last round: test pass@1, its gain over the start policy (paired
  90% interval), the start policy's best-of-n it reaches, and what each round trained on."""
  h = gains.headline(results)
  cfg = results["config"]
  start = results["start"]["test"]
  rows = [f"{cfg['rounds']} rounds of {cfg['prompts_per_round']} unlabelled prompts (difficulties "
          f"{', '.join(map(str, cfg['difficulties']))}), {cfg['samples_per_prompt']} samples each; "
          f"{len(start['per_question']['pass@1'])} test questions. Start policy: pass@1 "
          f"{_cell(start['pass@1'])}, greedy {start['greedy_pass@1']['value']:.3f}.", "",
          "| arm | test pass@1 [90%] | gain over the start [90%] | reaches start best-of-n "
          "(verifier / majority) | trained-on samples correct, by round |",
          "|---|---|---|---|---|"]
  for arm, records in results["arms"].items():
    last = records[-1]["test"]["pass@1"]
    reach = h["reaches"][arm]
    shares = [r.get("pseudo_labels", {}).get("chosen_accuracy") for r in records]
    trained = ("gold" if arm == arms_lib.SUPERVISED else
               " / ".join("-" if x is None else f"{x:.2f}" for x in shares))
    name = f"**{arm}** (chosen on validation)" if arm == h.get("best_arm") else arm
    rows.append(f"| {name} | {_cell(last)} | {_signed(h['gains'][arm])} | "
                f"{reach_text(reach['verifier'])} / {reach_text(reach['majority'])} | {trained} |")
  return "\n".join(rows + ["", "```", *gains.lines(results), "```"])


def render(results: dict) -> dict:
  """{'rounds': the per-round table, 'brief': the README's}."""
  return {"rounds": rounds_table(results), "brief": brief(results)}


def replace_blocks(text: str, blocks: dict) -> str:
  return doc_blocks.replace_blocks(text, blocks, prefix="label_free")
