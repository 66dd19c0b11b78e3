"""Calibration figures: reliability diagrams per method, Brier by difficulty (matplotlib only)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from adaptive_jax.prm.metrics import reliability_curve

METHODS = ("base", "calibrated", "quantile_median", "temperature", "isotonic", "histogram")


def plot_reliability(predictions: dict, results: dict, path: str, num_bins: int = 10) -> None:
  """One reliability diagram per method: mean MC target against mean prediction per bin."""
  cols = 3
  rows = -(-len(METHODS) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), sharex=True, sharey=True,
                           squeeze=False)
  for ax in axes.flat[len(METHODS):]:
    ax.set_visible(False)
  for ax, name in zip(axes.flat, METHODS):
    pred, obs, counts = reliability_curve(predictions[name], predictions["target"], num_bins)
    keep = counts > 0
    ax.plot([0, 1], [0, 1], ls="--", color="gray")
    ax.scatter(pred[keep], obs[keep], s=10 + 200 * counts[keep] / counts.sum())
    ax.plot(pred[keep], obs[keep])
    scores = results["methods"][name]
    ax.set(title=f"{name}\nBrier {scores['brier']:.3f}, ECE {scores['ece']:.3f}",
           xlabel="predicted P(success)", xlim=(0, 1), ylim=(0, 1))
  for ax in axes[:, 0]:
    ax.set_ylabel("Monte-Carlo success rate")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_brier_by_difficulty(results: dict, path: str) -> None:
  fig, ax = plt.subplots(figsize=(7, 4))
  for name in METHODS:
    by = results["methods"][name]["brier_by_difficulty"]
    ks = sorted(by, key=int)
    ax.plot([int(k) for k in ks], [by[k] for k in ks], marker="o", label=name)
  ax.set(xlabel="question difficulty (steps)", ylabel="Brier score", title="Brier by difficulty")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
