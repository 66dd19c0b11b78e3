r"""The main job: both papers end to end on the embedded data, then figures and the claims table.

  python -m experiments.main                      # configs/quick.py: 43 min on 2 cores
  python -m experiments.main --paper --workdir=workdir/main_paper   # stage 1 at paper size
  python -m experiments.main --config=configs/quick.py:small        # the documented configs

Runs Duo-LLM stage 1, the stage-2 oracle and the stage-3 routers, the reasoning policy, MC
labels and PRM calibration, the IAS study and every figure script, each in <workdir>/<stage>/ (figures in
<workdir>/figures/), with one progress line per stage; a second run skips the finished stages.
Ends with a table of the papers' claims beside ours (adaptive_jax/claims.py).
"""

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.main_job import run_main, set_verbosity
from adaptive_jax.train import distributed
from configs import quick

_QUICK = quick.__file__
_WORKDIR = flags.DEFINE_string("workdir", "workdir/main", "One folder per stage goes here.")
_CONFIG = config_flags.DEFINE_config_file("config", _QUICK, "The stages' configs (one section "
                                          "each).", lock_config=True)
_PAPER = flags.DEFINE_bool("paper", False, "Stage 1 at the paper's size: the same as "
                           "--config=configs/quick.py:paper (needs internet and a TPU/GPU).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the stages' own output and INFO logs "
                             "(else they go to main_job.log in each stage's folder).")


def main(argv):
  del argv
  distributed.initialize()  # before anything touches a device
  config = _CONFIG.value
  if _PAPER.value:
    if (config_flags.get_config_filename(flags.FLAGS["config"]) != _QUICK
        or config_flags.get_override_values(flags.FLAGS["config"])):
      raise app.UsageError("--paper loads configs/quick.py:paper; to change it, give "
                           "--config=configs/quick.py:paper and the overrides instead")
    config = quick.get_config("paper")
  set_verbosity(_VERBOSE.value)
  run_main(config, _WORKDIR.value, verbose=_VERBOSE.value)


if __name__ == "__main__":
  app.run(main)
