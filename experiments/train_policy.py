r"""Trains the reasoning policy and reports its accuracy by difficulty.

  python -m experiments.train_policy --config=configs/policy_small.py --workdir=workdir/policy_small
"""

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.policy.train import train_policy
from adaptive_jax.train import distributed

_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and results.", required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Policy config file.", lock_config=True)


def main(argv):
  del argv
  distributed.initialize()  # before anything touches a device
  results = train_policy(_CONFIG.value, _WORKDIR.value)
  sampled = results.get("sampled")
  n = sampled["samples"] if sampled else 0
  print("difficulty  greedy accuracy" + (f"  pass@1  pass@{n}  (temperature "
                                         f"{sampled['temperature']:g})" if sampled else ""))
  for d, acc in results["accuracy_by_difficulty"].items():
    row = f"{d:>10}  {acc:15.3f}"
    if sampled:
      row += f"  {sampled['pass@1_by_difficulty'][d]:6.3f}  {sampled[f'pass@{n}_by_difficulty'][d]:7.3f}"
    print(row)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
