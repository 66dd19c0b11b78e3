r"""Duo-LLM Fig. 8 baselines: per router budget, a dense model of equal FFN compute.

  python -m experiments.dense_baseline --config=configs/router_small.py --workdir=workdir/dense_small

Reads the stage-1 run's recorded config (config.stage1_workdir) and trains, per entry of
config.router.budgets, a dense transformer whose FFN width gives the routed model's FFN FLOPs
at that budget, on the same batches (adaptive_jax/router/dense_baseline.py), into
<workdir>/k<budget>. A finished budget is skipped; an interrupted one resumes.
"""

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.router import dense_baseline
from adaptive_jax.train import distributed

_WORKDIR = flags.DEFINE_string("workdir", None, "One sub-folder k<budget> per dense model.",
                               required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Router config file.",
                                          lock_config=True)


def main(argv):
  del argv
  distributed.initialize()  # before anything touches a device
  config = _CONFIG.value
  stage1 = dense_baseline.read_stage1_config(
      config.stage1_workdir, train_command=f"python -m experiments.train_duo "
      f"--config={config.stage1_config} --workdir={config.stage1_workdir}")
  results = dense_baseline.train_dense_baselines(stage1, config.router.budgets, _WORKDIR.value)
  print(f"{'k':>3}{'d_ff':>6}{'held-out ppl':>14}")
  for k, row in results.items():
    print(f"{k:>3}{row['d_ff']:>6}{row['eval/ppl@dense']:>14.2f}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
