r"""Calibration figures from a finished calibrate run (never retrains).

  python -m experiments.calibrate_figures --workdir=workdir/calibrate_small --out_dir=docs/figures
"""

import os

import numpy as np
from absl import app, flags

from adaptive_jax.figures import prm_calibration
from adaptive_jax.figures.results_file import load_results

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished experiments.calibrate workdir.",
                               required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", "docs/figures", "Folder for the PNGs.")


def main(argv):
  del argv
  results = load_results(_WORKDIR.value, "experiments.calibrate")
  predictions = dict(np.load(os.path.join(_WORKDIR.value, "predictions.npz")))
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  prm_calibration.plot_reliability(predictions, results,
                                   os.path.join(_OUT_DIR.value, "prm_reliability.png"))
  prm_calibration.plot_brier_by_difficulty(
      results, os.path.join(_OUT_DIR.value, "prm_brier_by_difficulty.png"))
  print(f"wrote figures to {_OUT_DIR.value}")


if __name__ == "__main__":
  app.run(main)
