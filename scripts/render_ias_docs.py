r"""Rewrites the IAS tables in docs/ias.md and README.md from a committed results file.

  python scripts/render_ias_docs.py --results=docs/results/ias_quick/results.json

tests/test_ias_docs.py fails when the committed docs differ from what this renders.
"""

import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import app, flags  # noqa: E402

from adaptive_jax.figures import ias_table  # noqa: E402

_RESULTS = flags.DEFINE_string("results", "docs/results/ias_quick/results.json",
                               "An IAS study's results.json, committed.")
DOCS = ("docs/ias.md", "README.md")


def main(argv):
  del argv
  with open(REPO / _RESULTS.value) as f:
    blocks = ias_table.render(json.load(f))
  for name in DOCS:
    path = REPO / name
    path.write_text(ias_table.replace_blocks(path.read_text(), blocks))
    print(f"rendered {name}")


if __name__ == "__main__":
  app.run(main)
