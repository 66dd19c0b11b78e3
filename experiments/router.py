r"""Duo-LLM stage 3: learned routers per budget on a trained stage-1 model.

  python -m experiments.router --config=configs/router_small.py --workdir=workdir/router_small
"""

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.studies.router_study import router_table, run_router_study
from adaptive_jax.train import distributed

_WORKDIR = flags.DEFINE_string("workdir", None, "Where results.json and routers.npz go.",
                               required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Router config file.",
                                          lock_config=True)


def main(argv):
  del argv
  distributed.initialize()  # before anything touches a device
  print(router_table(run_router_study(_CONFIG.value, _WORKDIR.value)))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
