r"""Stage-1 figure from finished runs (never retrains).

  python -m experiments.duo_figures --workdir=workdir/duo_small --out=docs/figures/duo_stage1.png

Several `--workdir`s (for example the p_big ablation) are drawn side by side, labelled by
their config's routing.p_big.
"""

import os

from absl import app, flags

from adaptive_jax.figures.duo_stage1 import plot_stage1
from adaptive_jax.figures.results_file import load_results
from adaptive_jax.train.metrics import read_metrics

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "Finished train_duo workdirs.",
                                      required=True)
_OUT = flags.DEFINE_string("out", "docs/figures/duo_stage1.png", "PNG to write.")
_LABELS = flags.DEFINE_multi_string("label", None, "One label per workdir (default: its name).")


def main(argv):
  del argv
  labels = _LABELS.value or [os.path.basename(os.path.normpath(w)) for w in _WORKDIRS.value]
  if len(labels) != len(_WORKDIRS.value):
    raise app.UsageError(f"give one --label per --workdir ({len(_WORKDIRS.value)}), "
                         f"got {len(labels)}")
  runs = {}
  for label, workdir in zip(labels, _WORKDIRS.value):
    runs[label] = (load_results(workdir, "experiments.train_duo"), read_metrics(workdir))
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  plot_stage1(runs, _OUT.value)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
