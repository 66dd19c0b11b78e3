"""docs/extending.md names only what exists: every repository path, every `file::name`
definition, every dotted `adaptive_jax` symbol and every `config.x.y` field of a shipped config;
README.md and docs/layout.md link to it."""

import importlib
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "extending.md"
TOP_DIRS = ("adaptive_jax", "tests", "configs", "scripts", "benchmarks", "docs", "experiments",
            "notebooks")
_PATH_RE = re.compile(rf"(?<![\w/.])((?:{'|'.join(TOP_DIRS)})/[\w./-]*)(?:::(\w+))?")
_DOTTED_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def _spans() -> list[str]:
  return re.findall(r"`([^`\n]+)`", PAGE.read_text())


def _paths() -> list[tuple[str, str | None]]:
  """(path, name or None) for every repository path in the page, in code spans or prose."""
  return [(path.rstrip("."), name) for path, name in _PATH_RE.findall(PAGE.read_text())]


def _symbols() -> list[str]:
  """Code spans that are dotted names, a trailing call's arguments dropped; none are files."""
  names = [re.sub(r"\(.*\)$", "", span) for span in _spans()]
  return [n for n in names if _DOTTED_RE.fullmatch(n) and not n.endswith((".py", ".md", ".npz"))
          and "/" not in n]


def _resolve(dotted: str):
  """Imports the longest module prefix of adaptive_jax.<dotted> (or of `jax.<...>`), then
  getattr the rest (a dataclass field without a default counts as an attribute)."""
  parts = dotted.split(".")
  root = [] if parts[0] == "jax" else ["adaptive_jax"]
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join([*root, *parts[:i]]))
    except ModuleNotFoundError:
      continue
    for attr in parts[i:]:
      fields = getattr(obj, "__dataclass_fields__", {})
      if not hasattr(obj, attr) and attr not in fields:
        raise AttributeError(f"{dotted}: {obj!r} has no {attr!r}")
      obj = getattr(obj, attr, None)
    return obj
  raise ModuleNotFoundError(f"{dotted}: no module of adaptive_jax at its start")


def _shipped_configs() -> list:
  configs = []
  for path in sorted((REPO / "configs").glob("*.py")):
    if path.stem != "__init__":
      configs.append(importlib.import_module(f"configs.{path.stem}").get_config())
  return configs


def test_every_path_and_definition_exists():
  paths = _paths()
  assert len(paths) >= 40, paths  # the page names many; fewer means the pattern broke
  for path, name in paths:
    file = REPO / path
    assert file.exists(), f"docs/extending.md names {path}, which does not exist"
    if name:
      defined = re.compile(rf"^(?:def|class) {name}\b|^{name}\s*=", re.M)
      assert defined.search(file.read_text()), f"{path} defines no {name}"


def test_every_symbol_imports():
  symbols = [s for s in _symbols() if not s.startswith("config.")]
  assert len(symbols) >= 50, symbols
  for symbol in symbols:
    _resolve(symbol)


def test_every_config_field_is_in_a_shipped_config():
  fields = [s.removeprefix("config.") for s in _symbols() if s.startswith("config.")]
  assert len(fields) >= 3, fields
  configs = _shipped_configs()
  for field in fields:
    def has(config, keys=field.split(".")):
      for key in keys:
        if key not in config:
          return False
        config = config[key]
      return True
    assert any(has(c) for c in configs), f"config.{field}: no shipped config has it"


@pytest.mark.parametrize("bad", ["tasks.problem.NoSuchThing", "no_such_module.thing",
                                 "nn.config.ModelConfig.no_such_field", "jax.lax.no_such_op"])
def test_resolve_rejects_names_that_do_not_exist(bad):
  with pytest.raises((AttributeError, ModuleNotFoundError)):
    _resolve(bad)


def test_readme_and_layout_link_to_the_page():
  assert "(docs/extending.md)" in (REPO / "README.md").read_text()
  assert "(extending.md)" in (REPO / "docs" / "layout.md").read_text()
