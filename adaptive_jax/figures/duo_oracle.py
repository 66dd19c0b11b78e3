"""Stage-2 figures (paper Fig. 2, 4a/4b, 5, 6) from the oracle study's results (matplotlib only)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

LAYER_BUDGETS = (4, 6, 8)  # the paper's Fig. 2 budgets for 12 layers


def _budget_rows(domain_results, section="budgets"):
  rows = domain_results[section]
  if "budgets" in rows:  # nested sections (sequential, skip) hold their own budgets
    rows = rows["budgets"]
  return sorted((int(k), v) for k, v in rows.items())


def plot_layer_usage(results: dict, path: str) -> None:
  """Fig. 2: the oracle's fraction of tokens on the big FFN per layer, at budgets 4, 6, 8."""
  domains = list(results["domains"])
  fig, axes = plt.subplots(1, len(domains) + 1, figsize=(5 * (len(domains) + 1), 3.8),
                           squeeze=False)
  for ax, domain in zip(axes[0], domains):
    rows = dict(_budget_rows(results["domains"][domain]))
    for k in LAYER_BUDGETS:
      if k in rows:
        usage = rows[k]["oracle_big_by_layer"]
        ax.plot(np.arange(1, len(usage) + 1), usage, marker="o", label=f"k = {k}")
    ax.set(xlabel="layer", ylabel="fraction of tokens on big FFN", ylim=(0, 1),
           title=f"Oracle, {domain}")
    ax.legend()
  ax = axes[0][-1]
  skip = results["domains"][domains[0]].get("skip")
  if skip:
    rows = dict(_budget_rows(results["domains"][domains[0]], "skip"))
    for k in LAYER_BUDGETS:
      if k in rows:
        layers = np.arange(1, len(rows[k]["big_by_layer"]) + 1)
        ax.plot(layers, rows[k]["big_by_layer"], marker="o", label=f"big, k = {k}")
        ax.plot(layers, rows[k]["skip_by_layer"], marker="x", ls="--", label=f"skip, k = {k}")
    ax.set(xlabel="layer", ylabel="fraction of tokens", ylim=(0, 1),
           title=f"With skip ({skip['num_patterns']} sampled patterns), {domains[0]}")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_budget_curves(results: dict, path: str) -> None:
  """Fig. 4a/4b: perplexity vs number of big layers for each routing method, per domain."""
  domains = list(results["domains"])
  fig, axes = plt.subplots(1, len(domains), figsize=(6 * len(domains), 4.2), squeeze=False)
  for ax, domain in zip(axes[0], domains):
    res = results["domains"][domain]
    rows = _budget_rows(res)
    ks = [k for k, _ in rows]
    for key, label, style in (("oracle_ppl", "oracle (paper)", "o-"),
                              ("fixed_ppl", "best fixed pattern", "s-"),
                              ("random_best_ppl", "best of 100 random", "^-")):
      ax.plot(ks, [r[key] for _, r in rows], style, label=label)
    seq = _budget_rows(res, "sequential") if res.get("sequential") else []
    if seq:
      ax.plot([k for k, _ in seq], [r["sequential_ppl"] for _, r in seq], "D-",
              label=f"context-consistent oracle ({res['sequential']['num_tokens']} tokens)")
      ax.plot([k for k, _ in seq], [r["oracle_ppl_same_tokens"] for _, r in seq], "o:",
              color="tab:blue", alpha=0.6, label="oracle (paper), same tokens")
    ax.axhline(res["all_big_ppl"], color="tab:red", ls="--", label="all big")
    ax.axhline(res["all_small_ppl"], color="tab:gray", ls="--", label="all small")
    ax.set(xlabel="number of big layers k", ylabel="perplexity", title=domain, yscale="log")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_token_losses(tokens: dict, path: str, *, max_tokens: int = 48) -> None:
  """Fig. 5/6: per-token loss of small, big and oracle along a text; difficulty below."""
  pieces = list(tokens["pieces"][:max_tokens])
  small, big, oracle = (np.asarray(tokens[k][:max_tokens]) for k in
                        ("loss_small", "loss_big", "loss_oracle"))
  x = np.arange(len(pieces))
  fig, (ax, ax_d) = plt.subplots(2, 1, figsize=(14, 6.5), sharex=True)
  ax.plot(x, small, "o-", label="all small", color="tab:gray")
  ax.plot(x, big, "s-", label="all big", color="tab:red")
  ax.plot(x, oracle, "^-", label=f"oracle, k = {int(tokens['budget'])}", color="tab:blue")
  ax.set(ylabel="loss on next token", title="Per-token loss along a held-out text")
  ax.legend()
  ax_d.bar(x, small - oracle, color="tab:purple")
  ax_d.set(ylabel="difficulty =\nloss(small) - loss(oracle)")
  ax_d.set_xticks(x, [repr(str(p))[1:-1] for p in pieces], rotation=90, fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
