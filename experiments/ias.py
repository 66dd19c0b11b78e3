r"""Instance-adaptive sampling: a regime chosen on a design split, pools, every method, ratios.

  python -m experiments.ias --config=configs/ias_small.py --workdir=workdir/ias_small

Prints the regime, the methods' table, the selectors' tiers and the headline ratios.
"""

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.figures import ias_table
from adaptive_jax.studies import ias_sweep
from adaptive_jax.studies.ias_study import run_ias_study
from adaptive_jax.train import distributed

_WORKDIR = flags.DEFINE_string("workdir", None, "results.json and the pools.", required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "IAS config file.", lock_config=True)


def main(argv):
  del argv
  distributed.initialize()  # before anything touches a device
  results = run_ias_study(_CONFIG.value, _WORKDIR.value)
  tables = ias_table.render(results)
  print(tables["headline"], tables["tiers"], *ias_sweep.headline_lines(results), sep="\n\n")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
