r"""Duo-LLM stage 1: train with random routing, evaluate under all-small / random / all-big.

  python -m experiments.train_duo --config=configs/duo_small.py --workdir=workdir/duo_small
"""

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.train import distributed
from adaptive_jax.train.loop import train_and_evaluate
from adaptive_jax.train.report import results_table

_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go.",
                               required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)


def main(argv):
  del argv
  distributed.initialize()  # before anything touches a device
  results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(results_table(results))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
