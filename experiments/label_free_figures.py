r"""The label-free loop's figure from a finished study (never resamples).

  python -m experiments.label_free_figures --workdir=workdir/label_free --out_dir=docs/figures

Writes label_free_rounds.png: test pass@1 per round per arm, with the start policy's
best-of-n as dotted lines.
"""

import os

from absl import app, flags

from adaptive_jax.figures.label_free import plot
from adaptive_jax.figures.results_file import load_results

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished experiments.label_free workdir.",
                               required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", "docs/figures", "Folder for the PNG.")
FIGURE = "label_free_rounds.png"


def main(argv):
  del argv
  results = load_results(_WORKDIR.value, "experiments.label_free")
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  print(f"wrote {plot(results, os.path.join(_OUT_DIR.value, FIGURE))}")


if __name__ == "__main__":
  app.run(main)
