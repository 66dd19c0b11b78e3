"""Stage-3 figures (paper Figs. 3, 4 with router rows, 4c, 7, 8) from the router study's
results.json and routes.npz (matplotlib only)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ROUTERS = (("paper", "paper router"), ("imitation", "imitation router"))


def _budgets(results: dict) -> list[tuple[int, dict]]:
  return sorted((int(k), row) for k, row in results["budgets"].items())


def _save(fig, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)


def plot_allocation(results: dict, routes: dict, path: str, *, domain: str = "shakespeare",
                    budget: int | None = None) -> None:
  """Fig. 3/7: where the routers spend their big layers. Left: fraction of tokens on BIG per
  layer (argmax routing) beside the oracle's; middle: big layers per position along the
  sequence; right: one held-out sequence's routes (layers x tokens) under the paper router."""
  rows = _budgets(results)
  budget = budget if budget is not None else rows[len(rows) // 2][0]
  fig, axes = plt.subplots(1, 3, figsize=(17, 4.2))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for (k, row), color in zip(rows, colors):
    layers = np.arange(1, results["num_layers"] + 1)
    ev = row["paper"]["eval"][domain]["argmax"]
    axes[0].plot(layers, ev["big_by_layer"], "o-", color=color,
                 label=f"paper router, k={k} (realized {ev['big_layers']:.1f})")
    imitation = row["imitation"]["eval"][domain]["argmax"]["big_by_layer"]
    axes[0].plot(layers, imitation, "s:", color=color, alpha=0.7)
    oracle = row.get("oracles", {}).get(domain, {}).get("oracle_big_by_layer")
    if oracle:
      axes[0].plot(layers, oracle, "x--", color=color, alpha=0.5)
    positions = np.arange(1, len(ev["big_by_position"]) + 1)
    axes[1].plot(positions, ev["big_by_position"], color=color, label=f"k={k}")
  axes[0].set(xlabel="layer", ylabel="fraction of tokens on big FFN", ylim=(0, 1),
              title=f"By layer, {domain} (solid: paper router, dotted: imitation, "
                    f"dashed: oracle)")
  axes[0].title.set_fontsize(9)
  axes[0].legend(fontsize=7)
  axes[1].set(xlabel="position in the sequence", ylabel="big layers (argmax routing)",
              title=f"Along the sequence, paper router, {domain}")
  axes[1].legend(fontsize=7)
  key = f"{domain}_paper_k{budget}"
  if key in routes:
    route_TxL = np.asarray(routes[key])
    image = axes[2].imshow(route_TxL.T, aspect="auto", origin="lower", cmap="viridis",
                           vmin=0, vmax=2, interpolation="nearest")
    cbar = fig.colorbar(image, ax=axes[2], ticks=[0, 1, 2])
    cbar.ax.set_yticklabels(["skip", "small", "big"])
    axes[2].set(xlabel="token", ylabel="layer (0: first)",
                title=f"One held-out sequence, paper router k={budget} (argmax)")
  _save(fig, path)


def plot_budget_curves(results: dict, path: str) -> None:
  """Fig. 4a/4b with router rows: held-out perplexity against big layers per token."""
  domains = list(results["domains"])
  fig, axes = plt.subplots(1, len(domains), figsize=(6.5 * len(domains), 4.6), squeeze=False)
  rows = _budgets(results)
  ks = [k for k, _ in rows]
  for ax, domain in zip(axes[0], domains):
    res = results["domains"][domain]
    for name, label in ROUTERS:
      exact = [row[name]["eval"][domain]["exact"]["ppl"] for _, row in rows]
      ax.plot(ks, exact, "o-" if name == "paper" else "s-", label=f"{label}, exactly k")
      argmax = [row[name]["eval"][domain]["argmax"] for _, row in rows]
      ax.plot([a["big_layers"] for a in argmax], [a["ppl"] for a in argmax],
              "o:" if name == "paper" else "s:", alpha=0.6,
              label=f"{label}, argmax (at its realized budget)")
    if all("oracles" in row for _, row in rows):
      oracles = [row["oracles"][domain] for _, row in rows]
      ax.plot(ks, [o["oracle_ppl"] for o in oracles], "x--", color="k",
              label="per-token oracle (reads the target)")
      ax.plot(ks, [o["fixed_ppl"] for o in oracles], "^--", color="tab:brown",
              label="best fixed pattern (chosen on this text)")
    if all("dense" in row for _, row in rows):
      ax.plot(ks, [row["dense"][domain]["ppl"] for _, row in rows], "d-", color="tab:purple",
              label="dense, equal FFN compute")
    ax.axhline(res["all_big_ppl"], color="tab:red", ls="--", lw=1, label="all big")
    ax.axhline(res["all_small_ppl"], color="tab:gray", ls="--", lw=1, label="all small")
    ax.set(xlabel="big layers per token", ylabel="held-out perplexity", title=domain,
           yscale="log")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
  _save(fig, path)


def plot_schedules(results: dict, path: str) -> None:
  """Fig. 4c: a budget schedule against the constant budget of its mean: perplexity per
  segment of the sequence, router and oracle, per domain."""
  domains = list(results["domains"])
  schedules = list(results["schedules"].items())
  fig, axes = plt.subplots(len(schedules), len(domains), squeeze=False,
                           figsize=(6 * len(domains), 4.4 * len(schedules)))
  for i, (name, sched) in enumerate(schedules):
    for ax, domain in zip(axes[i], domains):
      rows = sched["domains"][domain]
      whos = [w for w in ("router_constant", "router_schedule", "oracle_constant",
                          "oracle_schedule") if w in rows]
      num_segments = len(sched["schedule"])
      width = 0.8 / len(whos)
      for j, who in enumerate(whos):
        ppl_S = rows[who]["ppl_by_segment"]
        budgets = ([sched["mean"]] * num_segments if who.endswith("constant")
                   else sched["schedule"])
        bars = ax.bar(np.arange(num_segments) + j * width, ppl_S, width,
                      label=f"{who.replace('_', ', ')} (all: {rows[who]['ppl']:.1f})")
        for bar, k in zip(bars, budgets):
          ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"k={k}",
                  ha="center", va="bottom", fontsize=7)
      ax.set_xticks(np.arange(num_segments) + 0.4 - width / 2,
                    [f"segment {s + 1}" for s in range(num_segments)])
      ax.set(ylabel="held-out perplexity",
             title=f"schedule {name} vs constant {sched['mean']}, {domain}")
      ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
  _save(fig, path)


def plot_dense(results: dict, path: str) -> None:
  """Fig. 8: perplexity against FFN compute per token (mean FFN width per layer), routed
  (budget-exact) against a dense model of the same FFN width."""
  domains = list(results["domains"])
  fig, axes = plt.subplots(1, len(domains), figsize=(6 * len(domains), 4.2), squeeze=False)
  rows = _budgets(results)
  for ax, domain in zip(axes[0], domains):
    res = results["domains"][domain]
    for name, label in ROUTERS:
      ev = [row[name]["eval"][domain]["exact"] for _, row in rows]
      ax.plot([e["ffn_width"] for e in ev], [e["ppl"] for e in ev],
              "o-" if name == "paper" else "s-", label=f"routed: {label}")
    if all("dense" in row for _, row in rows):
      ax.plot([row["dense"]["d_ff"] for _, row in rows],
              [row["dense"][domain]["ppl"] for _, row in rows], "d-", color="tab:purple",
              label="dense of that FFN width")
    ax.plot([results["d_ff_small"], results["d_ff_big"]],
            [res["all_small_ppl"], res["all_big_ppl"]], "*", color="tab:red", ms=10,
            label="Duo all small / all big")
    ax.set(xlabel="mean FFN width per layer (FFN FLOPs / 6 D L)", ylabel="held-out perplexity",
           title=domain, yscale="log")
    ax.legend(fontsize=7)
  _save(fig, path)
