r"""Rewrites the results tables in the docs and the README from the committed results files.

  python scripts/render_docs.py

IAS: docs/results/ias_quick/results.json -> docs/ias.md, README.md (`<!-- ias:... -->`).
Label-free loop: docs/results/label_free/results.json -> docs/label_free.md, README.md
(`<!-- label_free:... -->`). tests/test_ias_docs.py and tests/test_label_free_docs.py fail
when the committed docs differ from what this renders.
"""

import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import app, flags  # noqa: E402

from adaptive_jax.figures import ias_table, label_free_table  # noqa: E402

_IAS = flags.DEFINE_string("ias_results", "docs/results/ias_quick/results.json",
                           "An IAS study's results.json, committed.")
_LABEL_FREE = flags.DEFINE_string("label_free_results",
                                  "docs/results/label_free/results.json",
                                  "A label-free study's results.json, committed.")


def main(argv):
  del argv
  for results, table, docs in ((_IAS.value, ias_table, ("docs/ias.md", "README.md")),
                               (_LABEL_FREE.value, label_free_table,
                                ("docs/label_free.md", "README.md"))):
    if not (REPO / results).exists():
      print(f"no {results}: {', '.join(docs)} left as they are")
      continue
    with open(REPO / results) as f:
      blocks = table.render(json.load(f))
    for name in docs:
      path = REPO / name
      path.write_text(table.replace_blocks(path.read_text(), blocks))
      print(f"rendered {name} from {results}")


if __name__ == "__main__":
  app.run(main)
