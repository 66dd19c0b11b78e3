r"""Stage-2 figures from a finished oracle study (never recomputes).

  python -m experiments.oracle_figures --workdir=workdir/oracle_small --out_dir=docs/figures

Writes duo_fig2_oracle_layers.png, duo_fig4_budgets.png and duo_fig5_6_tokens_<domain>.png.
"""

import os

import numpy as np
from absl import app, flags

from adaptive_jax.figures import duo_oracle
from adaptive_jax.figures.results_file import load_results

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished experiments.oracle workdir.",
                               required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", "docs/figures", "Folder for the PNGs.")


def main(argv):
  del argv
  results = load_results(_WORKDIR.value, "experiments.oracle")
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  out = lambda name: os.path.join(_OUT_DIR.value, name)
  duo_oracle.plot_layer_usage(results, out("duo_fig2_oracle_layers.png"))
  duo_oracle.plot_budget_curves(results, out("duo_fig4_budgets.png"))
  for domain in results["domains"]:
    tokens = dict(np.load(os.path.join(_WORKDIR.value, f"{domain}_tokens.npz")))
    duo_oracle.plot_token_losses(tokens, out(f"duo_fig5_6_tokens_{domain}.png"))
  print(f"wrote figures to {_OUT_DIR.value}")


if __name__ == "__main__":
  app.run(main)
