"""The README's Python API example runs as written and prints what its comments say."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _api_example() -> str:
  text = README.read_text()
  section = text[text.index("## Python API"):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_api_example_runs_and_prints_its_comments():
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(_api_example(), "README.md", "exec"), {})
  lines = out.getvalue().splitlines()
  # num_big: two rows of 16 counts in [0, 3]; then the router's budget; then IAS's sample counts.
  assert lines[0].startswith("[[") and len(lines[0].strip("[]").split()) == 16, lines
  assert lines[2:] == ["1 1", "[ 2  7 44]"], lines
