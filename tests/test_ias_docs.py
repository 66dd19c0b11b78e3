"""The IAS tables in docs/ias.md and the README are rendered from the committed results file."""

import json
import pathlib

from adaptive_jax.figures import ias_table

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "ias_small" / "results.json"
QUICK = REPO / "docs" / "results" / "ias_quick" / "results.json"


def test_replace_blocks_rewrites_only_the_marked_bodies():
  text = ("a\n<!-- ias:headline -->\nold\nlines\n<!-- /ias:headline -->\nb\n"
          "<!-- ias:tiers -->\n<!-- /ias:tiers -->\n")  # the second block empty
  out = ias_table.replace_blocks(text, {"headline": "new", "tiers": "t1\nt2", "absent": "z"})
  assert out == ("a\n<!-- ias:headline -->\nnew\n<!-- /ias:headline -->\nb\n"
                 "<!-- ias:tiers -->\nt1\nt2\n<!-- /ias:tiers -->\n")
  assert ias_table.replace_blocks(out, {"headline": "new", "tiers": "t1\nt2"}) == out


def test_committed_docs_match_the_committed_results():
  blocks = ias_table.render(json.loads(RESULTS.read_text()))
  for name, tables in (("docs/ias.md", ias_table.TABLES), ("README.md", ("brief",))):
    text = (REPO / name).read_text()
    assert ias_table.replace_blocks(text, blocks) == text, (
        f"{name} differs from {RESULTS.relative_to(REPO)}: run python scripts/render_docs.py")
    for table in tables:
      assert blocks[table] in text, f"{name} lacks the rendered {table} table"
  readme = (REPO / "README.md").read_text()
  assert "<!-- ias:brief -->" in readme and "<!-- ias:headline -->" in (
      REPO / "docs" / "ias.md").read_text()
  # The main job's quick run, under its own prefix on the same page.
  quick = ias_table.render(json.loads(QUICK.read_text()))
  text = (REPO / "docs" / "ias.md").read_text()
  assert ias_table.replace_blocks(text, quick, prefix="ias_quick") == text
  assert quick["headline"] in text and quick["tiers"] in text


def test_committed_pools_recompute_the_committed_headline():
  """`benchmarks.ias --pools` on the committed pools prints the results file's ratio lines."""
  from adaptive_jax.studies import ias_sweep
  from benchmarks import ias as ias_benchmark
  lines = ias_benchmark.ratio_lines(str(QUICK.parent / "pools"))
  assert lines[-3:] == ias_sweep.headline_lines(json.loads(QUICK.read_text()))


def test_the_headline_table_lists_every_method_both_ratios_and_the_gain():
  results = json.loads(RESULTS.read_text())
  table = ias_table.headline(results)
  for name in results["test"]["methods"]:
    label = dict(ias_table.METHOD_LABELS).get(name, name)
    assert f"| {label} |" in table, name
  ias = results["test"]["methods"]["ias"]
  assert f"{ias['matched']['ratio']:.2f}" in table
  assert f"{ias['matched_best_fixed']['ratio']:.2f}" in table
  lo, hi = ias["matched"]["accuracy_gain_interval"]
  assert f"{ias['matched']['accuracy_gain_at_equal_flops']:+.3f} [{lo:+.3f}, {hi:+.3f}]" in table


def test_the_brief_table_is_the_headline_restricted_to_the_allocation_families():
  results = json.loads(RESULTS.read_text())
  full, brief = ias_table.headline(results), ias_table.headline(results, brief=True)
  rows = [line for line in brief.splitlines() if line.startswith("| ")]
  assert all(row in full for row in rows)
  for name in ias_table.BRIEF:
    assert f"| {dict(ias_table.METHOD_LABELS)[name]} |" in brief
  assert "| control: IAS |" in brief and "Adaptive-Consistency" not in brief
