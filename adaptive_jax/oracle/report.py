"""Plain-text tables of the oracle study's results."""


def oracle_table(results: dict) -> str:
  """Per domain, one row per budget: perplexity of each routing method."""
  lines = []
  for domain, res in results["domains"].items():
    seq = res.get("sequential", {}).get("budgets", {})
    lines += [f"{domain}: {res['num_tokens']} tokens, {res['num_patterns']} patterns; "
              f"all-small {res['all_small_ppl']:.2f}, all-big {res['all_big_ppl']:.2f}",
              f"{'k':>3}{'oracle':>9}{'fixed':>9}{'rand100':>9}{'ctx-consist':>12}"
              f"{'(oracle same tokens)':>22}  best fixed pattern"]
    for k, row in sorted(res["budgets"].items(), key=lambda kv: int(kv[0])):
      s = seq.get(k) or seq.get(str(k))
      consistent = f"{s['sequential_ppl']:>12.2f}{s['oracle_ppl_same_tokens']:>22.2f}" if s else (
          f"{'':>12}{'':>22}")
      lines.append(f"{int(k):>3}{row['oracle_ppl']:>9.2f}{row['fixed_ppl']:>9.2f}"
                   f"{row['random_best_ppl']:>9.2f}{consistent}  {row['fixed_routes']}")
    lines.append("")
  return "\n".join(lines)
