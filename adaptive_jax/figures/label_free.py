"""The label-free loop's figure: test pass@1 per round per arm, against the start policy's
best-of-n (matplotlib only)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from adaptive_jax.label_free import arms

LABELS = {
    "supervised": "supervised on gold (labelled reference)",
    "majority": "majority-vote fine-tuning (TTRL's pseudo-label)",
    "best_of_n": "{reward} best-of-N fine-tuning",
    "budget_best_of_n": "{reward} best-of-N, budget-aware allocation",
    "grpo": "GRPO, {reward} reward (TAO)",
    "rule_best_of_n": "exact step checker best-of-N (ceiling)",
}
# What scores the samples, by label_free.reward.
REWARD_NAMES = {"verifier": "step verifier", "calibrated": "calibrated PRM",
                "likelihood": "policy likelihood"}
MARKERS = "osD^vP"


def plot(results: dict, path: str) -> str:
  """Test pass@1 (90% interval bars) after each round of each arm, round 0 the start policy;
  dotted lines: the start policy's best-of-n on test, selected by the loop's reward."""
  fig, ax = plt.subplots(figsize=(7.5, 5.6))
  start = results["start"]["test"]["pass@1"]
  cfg = results["config"]
  reward = REWARD_NAMES.get(cfg.get("reward", "verifier"), cfg.get("reward"))
  for i, (arm, records) in enumerate(results["arms"].items()):
    rounds = [0] + [r["round"] for r in records]
    metrics = [start] + [r["test"]["pass@1"] for r in records]
    values = [m["value"] for m in metrics]
    yerr = [[max(m["value"] - m["interval"][0], 0) for m in metrics],
            [max(m["interval"][1] - m["value"], 0) for m in metrics]]
    shift = (i - len(results["arms"]) / 2) * 0.04  # bars side by side, not on top
    ax.errorbar([r + shift for r in rounds], values, yerr=yerr, marker=MARKERS[i % len(MARKERS)],
                capsize=3, label=LABELS.get(arm, arm).format(reward=reward),
                ls="-" if arm in arms.LABEL_FREE else "--")
  bon = results["start"]["best_of_n"]
  low, high = ax.get_ylim()
  gap = 0.03 * (high - low)  # closer lines than this share one label
  labelled = []  # annotate a line only where it stands clear of those already named
  for k, acc in sorted(zip(bon["ks"], bon["verifier"]), key=lambda x: x[1]):
    ax.axhline(acc, color="gray", ls=":", lw=1)
    if all(abs(acc - other) > gap for other in labelled):
      names = [f"{n}" for n, a in zip(bon["ks"], bon["verifier"]) if 0 <= a - acc <= gap]
      ax.annotate(f"start, {reward} best-of-{'/'.join(names)}", (cfg["rounds"] + 0.15, acc),
                  xytext=(0, 2), textcoords="offset points", fontsize=7, color="gray",
                  ha="right")
      labelled.append(acc)
  ax.set_xticks(range(cfg["rounds"] + 1))
  ax.set_xlabel("round (0: the start policy)")
  ax.set_ylabel(f"test pass@1 (mean of {cfg['eval_samples']} samples, T={cfg['temperature']:g})")
  ax.set_title(f"Label-free loop: {cfg['prompts_per_round']} unlabelled prompts per round, "
               f"N = {cfg['samples_per_prompt']}")
  ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
