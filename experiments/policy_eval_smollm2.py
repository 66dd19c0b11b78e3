r"""SmolLM2-135M-Instruct few-shot on the arithmetic task: accuracy by difficulty.

  python -m experiments.policy_eval_smollm2 --workdir=workdir/policy_eval_smollm2
"""

import pathlib

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.studies.few_shot_study import results_table, run_study

_WORKDIR = flags.DEFINE_string("workdir", None, "Where results.json goes.", required=True)
_CONFIG = config_flags.DEFINE_config_file(
    "config", str(pathlib.Path(__file__).parents[1] / "configs" / "policy_eval_smollm2.py"),
    "Eval config file.", lock_config=True)


def main(argv):
  del argv
  print(results_table(run_study(_CONFIG.value, _WORKDIR.value)))


if __name__ == "__main__":
  app.run(main)
