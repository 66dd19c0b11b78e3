r"""Stage-3 figures from a finished router study (never recomputes).

  python -m experiments.router_figures --workdir=workdir/router_small --out_dir=docs/figures

Writes duo_fig3_7_router_allocation.png, duo_fig4_router_budgets.png,
duo_fig4c_schedules.png (when the study ran schedules) and duo_fig8_dense.png.
"""

import os

import numpy as np
from absl import app, flags

from adaptive_jax.figures import duo_router
from adaptive_jax.figures.results_file import load_results

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished experiments.router workdir.",
                               required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", "docs/figures", "Folder for the PNGs.")


def main(argv):
  del argv
  results = load_results(_WORKDIR.value, "experiments.router")
  routes = dict(np.load(os.path.join(_WORKDIR.value, "routes.npz")))
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  out = lambda name: os.path.join(_OUT_DIR.value, name)
  domain = next(iter(results["domains"]))
  duo_router.plot_allocation(results, routes, out("duo_fig3_7_router_allocation.png"),
                             domain=domain)
  duo_router.plot_budget_curves(results, out("duo_fig4_router_budgets.png"))
  if results["schedules"]:
    duo_router.plot_schedules(results, out("duo_fig4c_schedules.png"))
  duo_router.plot_dense(results, out("duo_fig8_dense.png"))
  print(f"wrote figures to {_OUT_DIR.value}")


if __name__ == "__main__":
  app.run(main)
