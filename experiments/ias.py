r"""Instance-adaptive sampling: fixed N, IAS, Adaptive-Consistency, DeepConf through one loop.

  python -m experiments.ias --config=configs/ias_small.py --workdir=workdir/ias_small
"""

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.prm.ias_study import run_ias_study
from adaptive_jax.train import distributed

_WORKDIR = flags.DEFINE_string("workdir", None, "results.json and test_pool.npz.", required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "IAS config file.", lock_config=True)


def _row(name: str, m: dict) -> str:
  low, high = m["accuracy_interval"]
  matched = m.get("matched", {})
  ratio = ("" if not matched else "not reached" if matched["not_reached"]
           else f"{matched['ratio']:.2f} ({m['matched_to']})")
  return (f"{name:<32}{m['accuracy']:>8.3f} [{low:.3f}, {high:.3f}]{m['samples']:>9.1f}"
          f"{m['policy_tokens']:>9.0f}{m['flops'] / 1e9:>9.3f}  {ratio}")


def main(argv):
  del argv
  distributed.initialize()  # before anything touches a device
  results = run_ias_study(_CONFIG.value, _WORKDIR.value)
  test = results["test"]
  print(f"aggregation (chosen on validation): {results['aggregation']}")
  print(f"{'method':<32}{'accuracy [90%]':>22}{'samples':>9}{'tokens':>9}{'GFLOPs':>9}  "
        "FLOPs / fixed at matched accuracy")
  rows = [(f"fixed N={n} {results['aggregation']}", r[results["aggregation"]])
          for n, r in test["fixed"].items()]
  rows += [(f"fixed N={n} majority", r["majority"]) for n, r in test["fixed"].items()]
  for name, m in rows + list(test["methods"].items()):
    print(_row(name, m))
  print(f"beam search on the first {results['beam']['questions']} test questions:")
  for name, m in results["beam"]["variants"].items():
    print(_row(name, m))
  print("Brier of each estimate against the test questions' success rates:",
        {k: round(v, 4) for k, v in {**results["estimate_brier"],
                                     **results["probe_brier"]}.items()})


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
