"""Stage-1 figure: training loss, and held-out perplexity per routing policy (matplotlib only)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_stage1(runs: dict[str, tuple[dict, list[dict]]], path: str) -> None:
  """`runs`: label -> (results.json dict, metrics.jsonl rows). Writes one PNG to `path`."""
  fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(11, 4))
  for label, (_, rows) in runs.items():
    ax_loss.plot([r["step"] for r in rows], [r["train/loss"] for r in rows], label=label)
  ax_loss.set(xlabel="step", ylabel="train loss (random routing)", title="Stage 1 training")
  ax_loss.legend()

  policies = [k.split("@", 1)[1] for k in next(iter(runs.values()))[0] if k.startswith("eval/ppl@")]
  width = 0.8 / len(runs)
  for i, (label, (results, _)) in enumerate(runs.items()):
    values = [results[f"eval/ppl@{p}"] for p in policies]
    bars = ax_ppl.bar([j + i * width for j in range(len(policies))], values, width, label=label)
    ax_ppl.bar_label(bars, fmt="%.1f", fontsize=8)
  ax_ppl.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(policies))], policies)
  ax_ppl.set(ylabel="held-out perplexity", title="Routing at evaluation")
  values = [results[f"eval/ppl@{p}"] for results, _ in runs.values() for p in policies]
  if max(values) > 5 * min(values):  # e.g. an ablation whose untrained module explodes
    ax_ppl.set_yscale("log")
  else:
    ax_ppl.set_ylim(0.9 * min(values), 1.05 * max(values))
  ax_ppl.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
