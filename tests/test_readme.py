"""The README's content: its two commands are CI's and the main job's, its status rows and links
name what exists, and its Python API example runs and prints what its comments say (the
rendered IAS block: tests/test_ias_docs.py)."""

import configparser
import contextlib
import io
import math
import pathlib
import re

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _section(text: str, heading: str) -> str:
  """From `heading` to the next heading of the same level."""
  start = text.index(heading + "\n")
  end = text.find("\n" + heading.split(" ")[0] + " ", start + len(heading))
  return text[start:end if end >= 0 else len(text)]


def _api_example() -> str:
  section = _section(README.read_text(), "## Python API")
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _commands(text: str) -> list[str]:
  """The command lines (not comments) of a shell text."""
  return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_python_api_example_runs_and_prints_its_comments():
  out, namespace = io.StringIO(), {}
  with contextlib.redirect_stdout(out):
    exec(compile(_api_example(), "README.md", "exec"), namespace)
  lines = out.getvalue().splitlines()
  assert namespace["logits_BxTxV"].shape == (2, 16, 512)  # as its comment says
  # num_big: the route's BIG layers counted per token by hand, printed as two rows of 16.
  route_BxTxL = np.asarray(namespace["route_BxTxL"])
  counts_BxT = (route_BxTxL == 2).sum(-1)  # routes: 0 skip, 1 small, 2 big
  assert set(np.unique(route_BxTxL)) == {1, 2} and counts_BxT.max() <= 3
  printed = np.array([[int(x) for x in re.findall(r"\d+", line)] for line in lines[:2]])
  np.testing.assert_array_equal(printed, counts_BxT)
  # The router's realized budget; then IAS's N(p) = ceil(log(1 - q) / log(1 - p)), capped at 64.
  closed_form = [min(64, math.ceil(math.log(1 - 0.99) / math.log(1 - p))) for p in (0.9, 0.5, 0.1)]
  assert closed_form == [2, 7, 44]
  assert lines[2:] == ["1 1", "[ 2  7 44]"], lines


def test_the_two_commands_are_what_ci_and_the_main_job_run():
  text = README.read_text()
  block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)  # the first code block
  main, tests = _commands(block)
  ci = (REPO / ".ci" / "run").read_text()
  assert _commands(ci)[-1] == tests, "README's second command is not .ci/run's"
  assert [c for c in _commands(ci) if not c.startswith(("set ", "cd "))] == [tests]
  # Both set up the same way; the first runs the main job's entry point, the second the suite.
  main_steps, test_steps = main.split(" && "), tests.split(" && ")
  assert main_steps[0] == test_steps[0] == "python3 -m venv .venv"
  assert main_steps[1] == ".venv/bin/pip install -q -e ."
  assert main_steps[2] == ".venv/bin/python -m experiments.main"
  assert "run_main" in (REPO / "experiments" / "main.py").read_text()
  assert test_steps[-2:] == [".venv/bin/ruff check .", ".venv/bin/python -m pytest -n 2 -q tests"]
  # The extras it installs exist, and the one it names holds what `-n 2` needs.
  setup = configparser.ConfigParser()
  setup.read(REPO / "setup.cfg")
  extras = setup["options.extras_require"]
  (extra,) = re.findall(r'-e "\.\[(\w+)\]"', tests)
  assert extra in extras and "pytest-xdist" in extras[extra] and "ruff" in extras[extra]


def test_status_rows_name_existing_modules():
  section = _section(README.read_text(), "## Status")
  rows = [line for line in section.splitlines() if line.startswith("| ")][2:]  # header, rule
  assert len(rows) >= 15
  for row in rows:
    part, where, status = (cell.strip() for cell in row.strip("|").split("|"))
    assert status.startswith(("done", "partial", "not yet")), row
    paths = re.findall(r"`([^`]+)`", where)
    assert paths or status == "not yet", f"a done row names no module: {part}"
    for path in paths:  # under adaptive_jax/ ("Paths are under adaptive_jax/"), else the repo's
      found = list((REPO / "adaptive_jax").glob(path)) or list(REPO.glob(path))
      assert found, f"{part}: {path} does not exist"


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: pathlib.Path) -> set[str]:
  text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # no headings in code
  return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_links_and_images_point_to_existing_files_and_headings():
  text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
  targets = re.findall(r"\]\(([^)\s]+)\)", text)
  assert len(targets) >= 20
  for target in targets:
    if target.startswith(("http://", "https://")):
      continue
    path, _, anchor = target.partition("#")
    file = REPO / path if path else README
    assert file.is_file(), target
    if anchor:
      assert anchor in _anchors(file), f"{target}: no such heading in {file.name}"
