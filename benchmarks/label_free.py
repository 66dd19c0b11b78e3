r"""The label-free loop's report, read from a finished study's results.json (no model runs).

  python -m benchmarks.label_free --results=docs/results/label_free/results.json

Prints the table per round and arm (test pass@1, greedy, pass@K with 90% intervals over
questions; validation pass@1; distinct answers; the verifier's Brier; what each arm trained
on and how often it was right; GFLOPs), then, last:

  label_free_gain = x [lo, hi]          # best label-free arm (chosen on validation), test
                                        # pass@1 after the last round minus the start policy's
  label_free_gain/supervised_gain = r   # over the supervised arm's gain on the same prompts

The gains and the interval are recomputed from the per-question results (`label_free.gains`).
Targets: lo > 0; r >= 0.5.
"""

import json

from absl import app, flags

from adaptive_jax.figures import label_free_table
from adaptive_jax.label_free import gains

_RESULTS = flags.DEFINE_string("results", None, "A label-free study's results.json.",
                               required=True)


def report(path: str) -> list[str]:
  """The printed lines: the table, what n = 1 reaches, then the two headline lines."""
  with open(path) as f:
    results = json.load(f)
  results["headline"] = gains.headline(results)  # recomputed, not read
  reach = "; ".join(f"{arm} {r['pass@1']:.3f}: {label_free_table.reach_text(r['verifier'])}"
                    for arm, r in results["headline"]["reaches"].items())
  return [label_free_table.rounds_table(results), "",
          f"tuned policy at n = 1 against the start policy's verifier best-of-n: {reach}",
          *gains.lines(results)]


def main(argv):
  del argv
  print(*report(_RESULTS.value), sep="\n")


if __name__ == "__main__":
  app.run(main)
