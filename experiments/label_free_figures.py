r"""The label-free loop's figure from a finished study (never resamples).

  python -m experiments.label_free_figures --workdir=workdir/label_free --out_dir=docs/figures
  python -m experiments.label_free_figures --workdir=workdir/label_free_smollm2 \
      --figure=label_free_smollm2_rounds.png

Writes --figure (label_free_rounds.png): test pass@1 per round per arm, with the start
policy's best-of-n as dotted lines.
"""

import os

from absl import app, flags

from adaptive_jax.figures.label_free import plot
from adaptive_jax.figures.results_file import load_results

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished experiments.label_free workdir.",
                               required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", "docs/figures", "Folder for the PNG.")
_FIGURE = flags.DEFINE_string("figure", "label_free_rounds.png", "The PNG's file name.")


def main(argv):
  del argv
  results = load_results(_WORKDIR.value, "experiments.label_free")
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  print(f"wrote {plot(results, os.path.join(_OUT_DIR.value, _FIGURE.value))}")


if __name__ == "__main__":
  app.run(main)
