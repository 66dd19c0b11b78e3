"""The IAS tables in docs/ias.md and the README are rendered from the committed results file."""

import json
import pathlib
import subprocess
import sys

from adaptive_jax.figures import ias_table

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "ias_quick" / "results.json"


def test_replace_blocks_rewrites_only_the_marked_bodies():
  text = "a\n<!-- ias:headline -->\nold\nlines\n<!-- /ias:headline -->\nb\n<!-- ias:tiers -->\nx\n<!-- /ias:tiers -->\n"
  out = ias_table.replace_blocks(text, {"headline": "new", "tiers": "t1\nt2", "absent": "z"})
  assert out == ("a\n<!-- ias:headline -->\nnew\n<!-- /ias:headline -->\nb\n"
                 "<!-- ias:tiers -->\nt1\nt2\n<!-- /ias:tiers -->\n")


def test_committed_docs_match_the_committed_results():
  blocks = ias_table.render(json.loads(RESULTS.read_text()))
  for name in ("docs/ias.md", "README.md"):
    text = (REPO / name).read_text()
    assert ias_table.replace_blocks(text, blocks) == text, (
        f"{name} differs from {RESULTS.relative_to(REPO)}: run python scripts/render_ias_docs.py")
  readme = (REPO / "README.md").read_text()
  assert "<!-- ias:headline -->" in readme and "<!-- ias:headline -->" in (
      REPO / "docs" / "ias.md").read_text()


def test_committed_pools_recompute_the_committed_headline():
  """`benchmarks.ias --pools` on the committed pools prints the results file's ratio lines."""
  from adaptive_jax.prm import ias_sweep
  from benchmarks import ias as ias_benchmark
  lines = ias_benchmark.ratio_lines(str(RESULTS.parent / "pools"))
  assert lines[-3:] == ias_sweep.headline_lines(json.loads(RESULTS.read_text()))
