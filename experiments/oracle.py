r"""Duo-LLM stage 2: oracle routing under a budget on a trained stage-1 model.

  python -m experiments.oracle --config=configs/oracle_small.py --workdir=workdir/oracle_small
"""

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.oracle.report import oracle_table
from adaptive_jax.studies.oracle_study import run_oracle_study
from adaptive_jax.train import distributed

_WORKDIR = flags.DEFINE_string("workdir", None, "Where results.json and NPZ files go.",
                               required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Oracle config file.",
                                          lock_config=True)


def main(argv):
  del argv
  distributed.initialize()  # before anything touches a device
  print(oracle_table(run_oracle_study(_CONFIG.value, _WORKDIR.value)))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
