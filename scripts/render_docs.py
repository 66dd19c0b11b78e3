r"""Rewrites the results tables in the docs and the README from the committed results files.

  python scripts/render_docs.py

Each entry of RENDERS: a committed results.json, the module that renders it and the files
whose `<!-- prefix:name -->` blocks it fills. tests/test_render_docs.py (and the IAS and
label-free docs tests) fail when the committed docs differ from what this renders.
"""

import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import app  # noqa: E402

from adaptive_jax.figures import (  # noqa: E402
    calibration_table,
    doc_blocks,
    ias_table,
    label_free_table,
)

# (results file, table module, block prefix, files holding its blocks)
RENDERS = (
    ("docs/results/ias_small/results.json", ias_table, "ias", ("docs/ias.md", "README.md")),
    ("docs/results/ias_quick/results.json", ias_table, "ias_quick", ("docs/ias.md",)),
    ("docs/results/label_free/results.json", label_free_table, "label_free",
     ("docs/label_free.md", "README.md")),
    ("docs/results/calibrate_ias/results.json", calibration_table, "calibrate_ias",
     ("docs/calibrated_prm.md",)),
    ("docs/results/calibrate_smollm2/results.json", calibration_table, "calibrate_smollm2",
     ("docs/pretrained.md",)),
    ("docs/results/ias_smollm2/results.json", ias_table, "ias_smollm2", ("docs/pretrained.md",)),
    ("docs/results/label_free_smollm2/results.json", label_free_table, "label_free_smollm2",
     ("docs/label_free.md",)),
)


def render_all(repo: pathlib.Path = REPO) -> dict[str, str]:
  """{file: its text with every block rendered from the committed results}."""
  texts = {}
  for results, table, prefix, docs in RENDERS:
    blocks = table.render(json.loads((repo / results).read_text()))
    for name in docs:
      text = texts.get(name, (repo / name).read_text())
      texts[name] = doc_blocks.replace_blocks(text, blocks, prefix=prefix)
  return texts


def main(argv):
  del argv
  for name, text in render_all().items():
    (REPO / name).write_text(text)
    print(f"rendered {name}")


if __name__ == "__main__":
  app.run(main)
