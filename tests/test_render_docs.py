"""Every rendered block in the docs equals what scripts/render_docs.py renders from the
committed results files, and every file it names holds its blocks."""

import importlib.util
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]


def _render_docs():
  spec = importlib.util.spec_from_file_location("render_docs", REPO / "scripts" / "render_docs.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_committed_docs_equal_their_rendering():
  for name, text in _render_docs().render_all().items():
    assert text == (REPO / name).read_text(), (
        f"{name} differs from its results files: run python scripts/render_docs.py")


def test_each_render_fills_at_least_one_block_of_every_file_it_names():
  for results, _, prefix, docs in _render_docs().RENDERS:
    assert (REPO / results).exists(), results
    for name in docs:
      text = (REPO / name).read_text()
      opened = re.findall(rf"<!-- {prefix}:(\w+) -->", text)
      closed = re.findall(rf"<!-- /{prefix}:(\w+) -->", text)
      assert opened and opened == closed, (name, prefix, opened, closed)


def test_a_stale_block_is_rendered_again(tmp_path):
  module = _render_docs()
  for results, _, _, docs in module.RENDERS:
    for path in (results,) + docs:
      (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
      (tmp_path / path).write_text((REPO / path).read_text())
  readme = tmp_path / "README.md"
  stale = re.sub(r"(<!-- ias:brief -->\n).*?(<!-- /ias:brief -->)", r"\1stale\n\2",
                 readme.read_text(), flags=re.S)
  assert stale != readme.read_text()
  readme.write_text(stale)
  assert module.render_all(tmp_path)["README.md"] == (REPO / "README.md").read_text()
