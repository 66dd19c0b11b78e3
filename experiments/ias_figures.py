r"""IAS figures from a finished IAS study (never resamples).

  python -m experiments.ias_figures --workdir=workdir/ias_small --out_dir=docs/figures

Writes ias_accuracy_vs_flops.png, ias_samples_vs_difficulty.png, ias_coverage_vs_samples.png
(when results.json has coverage) and, when the study ran beam search, ias_beam.png.
"""

import os

from absl import app, flags

from adaptive_jax.figures import ias
from adaptive_jax.figures.results_file import load_results

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished experiments.ias workdir.",
                               required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", "docs/figures", "Folder for the PNGs.")


def main(argv):
  del argv
  results = load_results(_WORKDIR.value, "experiments.ias")
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  out = lambda name: os.path.join(_OUT_DIR.value, name)
  ias.accuracy_vs_flops(results, out("ias_accuracy_vs_flops.png"))
  ias.samples_vs_difficulty(results, out("ias_samples_vs_difficulty.png"))
  if not ias.coverage_vs_samples(results, out("ias_coverage_vs_samples.png")):
    print("no coverage in results.json: skipped ias_coverage_vs_samples.png")
  if not ias.beam_accuracy_vs_budget(results, out("ias_beam.png")):
    print("no beam section in results.json: skipped ias_beam.png")
  print(f"wrote figures to {_OUT_DIR.value}")


if __name__ == "__main__":
  app.run(main)
