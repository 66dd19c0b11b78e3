"""The label-free tables in docs/label_free.md and the README are rendered from the committed
results file, and its report recomputes the committed headline."""

import json
import pathlib

import pytest

from adaptive_jax.figures import label_free_table
from adaptive_jax.label_free import gains
from benchmarks import label_free as label_free_benchmark

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "label_free" / "results.json"
SMOLLM2 = REPO / "docs" / "results" / "label_free_smollm2" / "results.json"


def test_committed_docs_match_the_committed_results():
  blocks = label_free_table.render(json.loads(RESULTS.read_text()))
  for name, tables in (("docs/label_free.md", ("brief", "rounds")), ("README.md", ("brief",))):
    text = (REPO / name).read_text()
    assert label_free_table.replace_blocks(text, blocks) == text, (
        f"{name} differs from {RESULTS.relative_to(REPO)}: run python scripts/render_docs.py")
    for table in tables:
      assert f"<!-- label_free:{table} -->\n{blocks[table]}\n<!-- /label_free:{table} -->" in text


@pytest.mark.parametrize("path", [RESULTS, SMOLLM2], ids=["small", "smollm2"])
def test_report_recomputes_the_committed_headline(path):
  results = json.loads(path.read_text())
  assert gains.headline(results) == results["headline"]
  lines = label_free_benchmark.report(str(path))
  assert lines[-3:] == gains.lines(results)
  assert lines[-2].startswith("label_free_gain = ")
  assert lines[-1].startswith("label_free_gain/supervised_gain = ")
