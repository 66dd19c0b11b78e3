"""A plain-text table of a stage-1 results dict."""


def results_table(results: dict) -> str:
  """One row per routing policy: held-out loss and perplexity; train loss and size on top."""
  lines = [f"step {results['step']}  train/loss {results['train/loss']:.4f}  "
           f"params {results['num_params']:,}",
           f"{'routing':<16}{'held-out loss':>14}{'perplexity':>12}"]
  for key, ppl in results.items():
    if key.startswith("eval/ppl@"):
      policy = key.split("@", 1)[1]
      lines.append(f"{policy:<16}{results[f'eval/loss@{policy}']:>14.4f}{ppl:>12.2f}")
  return "\n".join(lines)
