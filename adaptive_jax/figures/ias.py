"""IAS figures: test accuracy vs FLOPs, samples by difficulty, beam search (matplotlib only)."""

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import EngFormatter, NullFormatter

# Adaptive methods in plotting order, with their legend labels; unknown names plot as named.
LABELS = {
    "ias": "IAS (setting chosen on validation)",
    "offline": "budget-aware, offline greedy",
    "online": "budget-aware, online in the loop",
    "adaptive_consistency": "Adaptive-Consistency",
    "deepconf_low": "DeepConf-low",
    "deepconf_high": "DeepConf-high",
    "probe_confidence": "probe IAS, policy confidence of sample 1",
    "probe_combined": "probe IAS, confidence + PRM + prior",
}
# The allocation figure: samples per difficulty of the methods that allocate from estimates.
ALLOCATION = ("ias", "offline", "online", "probe_combined")
MARKERS = "osD^v<>Ph*X"


def _ordered(methods: dict) -> list:
  return [n for n in LABELS if n in methods] + sorted(n for n in methods if n not in LABELS)


def _errorbar(ax, m: dict, **kwargs) -> None:
  """A point at (FLOPs, accuracy) with its 90% bootstrap interval as a vertical bar."""
  low, high = m.get("accuracy_interval", (m["accuracy"], m["accuracy"]))
  yerr = [[max(m["accuracy"] - low, 0.0)], [max(high - m["accuracy"], 0.0)]]
  ax.errorbar([m["flops"]], [m["accuracy"]], yerr=yerr, capsize=3, ls="none", **kwargs)


def _by_difficulty(by: dict) -> tuple:
  ks = sorted(by, key=int)
  return np.array([int(k) for k in ks]), np.array([by[k] for k in ks])


def _questions(results: dict, split: str = "test") -> str:
  n = results.get("num_questions", {}).get(split)
  return f", {n} {split} questions" if n else ""


def _accuracy_vs_flops_axes(ax, title: str) -> None:
  ax.set_xscale("log")
  # 3G rather than 3x10^9, on minor ticks too: a sweep often spans less than a decade.
  ax.xaxis.set_major_formatter(EngFormatter(sep=""))
  low, high = ax.get_xlim()
  # Minor labels only within a decade: over more they crowd into each other.
  ax.xaxis.set_minor_formatter(EngFormatter(sep="") if high < 10 * low else NullFormatter())
  ax.tick_params(axis="x", which="both", labelsize=8)
  ax.margins(x=0.08, y=0.08)  # room for the point labels at the ends
  low, high = ax.get_ylim()
  ax.set_ylim(max(low, -0.02), min(high, 1.02))  # an accuracy; keeps 0 and 1 readable
  ax.set(xlabel="FLOPs per question (log scale)", ylabel="test accuracy", title=title)
  ax.grid(alpha=0.3, which="both")
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8, frameon=False)


def _save(fig, path: str) -> None:
  fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps a legend placed outside the axes
  plt.close(fig)


def accuracy_vs_flops(results: dict, path: str) -> None:
  """Fixed-N sweeps (chosen aggregation, majority) as lines, adaptive methods as points."""
  test, aggregation = results["test"], results["aggregation"]
  ns = sorted(test["fixed"], key=int)
  fig, ax = plt.subplots(figsize=(8, 5))
  if aggregation == "majority":  # the two sweeps are one
    sweeps = [("majority", "fixed N (majority) = self-consistency", "k", "-")]
  else:
    sweeps = [(aggregation, f"fixed N ({aggregation})", "k", "-"),
              ("majority", "self-consistency (fixed N, majority)", "gray", "--")]
  for name, label, color, ls in sweeps:
    flops = [test["fixed"][n][name]["flops"] for n in ns]
    acc = [test["fixed"][n][name]["accuracy"] for n in ns]
    ax.plot(flops, acc, marker=".", ms=8, color=color, ls=ls, label=label, zorder=1)
    for n, x, y in zip(ns, flops, acc):
      ax.annotate(f"N={n}", (x, y), textcoords="offset points", xytext=(0, -12), ha="center",
                  fontsize=7, color=color)
  for i, name in enumerate(_ordered(test["methods"])):
    _errorbar(ax, test["methods"][name], marker=MARKERS[i % len(MARKERS)], ms=7,
              color=f"C{i}", label=LABELS.get(name, name), zorder=2)
    # Every setting of the swept families, faint: the curve the chosen setting sits on.
    sweep = test.get("sweeps", {}).get(name, [])
    ax.plot([p["flops"] for p in sweep], [p["accuracy"] for p in sweep], ls="none",
            marker=MARKERS[i % len(MARKERS)], ms=3, alpha=0.25, color=f"C{i}", zorder=1)
  _accuracy_vs_flops_axes(ax, f"Test accuracy vs compute{_questions(results)}\n"
                              f"(bars: 90% bootstrap interval; IAS answers by {aggregation}, "
                              "chosen on validation)")
  _save(fig, path)


def samples_vs_difficulty(results: dict, path: str) -> None:
  """Left: IAS's mean samples per difficulty by estimate; right: the true success rate."""
  methods = results["test"]["methods"]
  n_max = max(int(n) for n in results["test"]["fixed"])
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
  shown = [n for n in ALLOCATION if n in methods]
  for i, name in enumerate(shown):
    d, samples = _by_difficulty(methods[name]["samples_by_difficulty"])
    # Nudged apart along x so that methods allocating alike (all at n_max, say) stay visible.
    left.plot(d + 0.06 * (i - (len(shown) - 1) / 2), samples, marker=MARKERS[i], color=f"C{i}",
              label=LABELS[name])
  left.axhline(n_max, ls=":", color="gray", label=f"largest fixed N ({n_max})")
  left.set(xlabel="question difficulty (steps)", ylabel="mean samples per question",
           ylim=(0, n_max * 1.08),
           title=f"Samples IAS allocates by difficulty{_questions(results)}")
  left.legend(fontsize=8)
  d, rate = _by_difficulty(results["success_rate_by_difficulty"])
  right.bar_label(right.bar(d, rate, color="C7", width=0.6), fmt="%.2f", fontsize=8)
  right.set(xlabel="question difficulty (steps)", ylabel="P(one sample is correct)",
            ylim=(0, 1), title="True per-sample success rate by difficulty (test pool)")
  right.set_xticks(d)
  fig.tight_layout()
  _save(fig, path)


def beam_variants(results: dict):
  """The beam variants: results["test"]["beam"], or results["beam"]["variants"] as
  `ias_study.run_ias_study` writes them; None when the study ran no beam search."""
  if "beam" in results.get("test", {}):
    return results["test"]["beam"]
  return results.get("beam", {}).get("variants")


def beam_accuracy_vs_budget(results: dict, path: str) -> bool:
  """Fixed (K beams, M expansions) searches as a line, IAS-of-K/M as points; False if absent."""
  variants = beam_variants(results)
  if not variants:
    return False
  fig, ax = plt.subplots(figsize=(7, 4.5))
  fixed = sorted((m["flops"], m["accuracy"], name) for name, m in variants.items()
                 if name.startswith("fixed"))
  if fixed:
    ax.plot([f for f, _, _ in fixed], [a for _, a, _ in fixed], marker=".", ms=8, color="k",
            label="fixed beam search")
    for x, y, name in fixed:
      km = re.fullmatch(r"fixed_K(\d+)_M(\d+)", name)
      ax.annotate(f"K={km[1]}, M={km[2]}" if km else name, (x, y), textcoords="offset points",
                  xytext=(0, -12), ha="center", fontsize=7)
  others = [name for name in variants if not name.startswith("fixed")]
  labels = {"ias_of_k": "IAS-of-K (beams from q0.1)", "ias_of_m": "IAS-of-M (expansions from q0.1)"}
  for i, name in enumerate(sorted(others)):
    _errorbar(ax, variants[name], marker=MARKERS[i % len(MARKERS)], ms=7, color=f"C{i}",
              label=labels.get(name, name))
  questions = results.get("beam", {}).get("questions")
  _accuracy_vs_flops_axes(ax, "Step-level beam search: accuracy vs compute"
                          + (f", {questions} test questions" if questions else "")
                          + "\n(bars: 90% bootstrap interval)")
  _save(fig, path)
  return True


def coverage_vs_samples(results: dict, path: str) -> bool:
  """Coverage (some drawn sample is correct: a perfect selector) against samples per question,
  fixed N as a line, adaptive methods as points. False (nothing written) without coverage."""
  test = results["test"]
  ns = sorted(test["fixed"], key=int)
  if "coverage" not in test["fixed"][ns[0]]["majority"]:
    return False
  fig, ax = plt.subplots(figsize=(8, 5))
  samples = [test["fixed"][n]["majority"]["samples"] for n in ns]
  coverage = [test["fixed"][n]["majority"]["coverage"] for n in ns]
  ax.plot(samples, coverage, marker=".", ms=8, color="k", label="fixed N")
  for n, x, y in zip(ns, samples, coverage):
    ax.annotate(f"N={n}", (x, y), textcoords="offset points", xytext=(0, -12), ha="center",
                fontsize=7)
  for i, name in enumerate(_ordered(test["methods"])):
    m = test["methods"][name]
    ax.plot([m["samples"]], [m["coverage"]], marker=MARKERS[i % len(MARKERS)], ms=7, ls="none",
            color=f"C{i}", label=LABELS.get(name, name))
  ax.set_xscale("log", base=2)
  ax.set(xlabel="samples per question (log scale)", ylabel="coverage: some sample is correct",
         title=f"Allocation alone: coverage vs samples{_questions(results)}\n"
               "(the accuracy a perfect selector would reach; an oracle that reads the answer)")
  ax.grid(alpha=0.3, which="both")
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8, frameon=False)
  _save(fig, path)
  return True
