r"""SmolLM2-135M-Instruct on held-out text (perplexity, bits per byte) and factual prompts.

  python -m experiments.pretrained_eval --workdir=workdir/pretrained_eval \
      [--duo_workdir=workdir/duo_small]
"""

import pathlib

from absl import app, flags
from ml_collections import config_flags

from adaptive_jax.studies.pretrained_study import results_table, run_study

_WORKDIR = flags.DEFINE_string("workdir", None, "Where results.json goes.", required=True)
_DUO_WORKDIR = flags.DEFINE_string(
    "duo_workdir", None, "A finished train_duo run: also score it (all-big routes) on the same "
    "bytes. Unset: SmolLM2 only.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", str(pathlib.Path(__file__).parents[1] / "configs" / "pretrained_eval.py"),
    "Eval config file.", lock_config=True)


def main(argv):
  del argv
  print(results_table(run_study(_CONFIG.value, _WORKDIR.value, _DUO_WORKDIR.value)))


if __name__ == "__main__":
  app.run(main)
