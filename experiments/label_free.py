r"""The label-free loop (TAO-style): arms, rounds, evaluation, the headline gain.

  python -m experiments.label_free --config=configs/label_free_small.py --workdir=workdir/label_free

Writes results.json (resumes a killed run) and prints the table per round and arm and the
headline lines.
"""

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.figures import label_free_table
from adaptive_jax.label_free import gains
from adaptive_jax.studies.label_free_study import run_label_free_study
from adaptive_jax.train import distributed

_WORKDIR = flags.DEFINE_string("workdir", None, "results.json and each round's policy.",
                               required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Label-free config file.",
                                          lock_config=True)


def main(argv):
  del argv
  distributed.initialize()  # before anything touches a device
  results = run_label_free_study(_CONFIG.value, _WORKDIR.value)
  print(label_free_table.rounds_table(results), *gains.lines(results), sep="\n\n")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
