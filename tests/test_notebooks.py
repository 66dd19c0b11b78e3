"""The Colab notebooks are valid, output-free, and name only modules, configs and flags that exist.

Structural checks, read from the JSON: the notebooks are not executed here.
"""

import ast
import importlib
import json
import pathlib
import re
import shlex

import ml_collections
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
_CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# absl flag definitions whose flag holds a config file (overridable as --config.a.b=v).
_CONFIG_DEFINES = {"DEFINE_config_file", "DEFINE_config_dict", "DEFINE_config_dataclass"}
_SHELL_OPERATORS = re.compile(r"^[;&|()<>]+$")


def _source(cell) -> str:
  return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _logical_lines(text: str) -> list[str]:
  """Lines with backslash continuations joined, as IPython does for `!` and `%` lines."""
  lines, pending = [], ""
  for line in text.split("\n"):
    if line.endswith("\\"):
      pending += line[:-1] + " "
    else:
      lines.append(pending + line)
      pending = ""
  return lines + ([pending] if pending else [])


def _shell_snippets(cell) -> list[str]:
  """Shell text that may run an entry point: `!` lines of code cells, code spans of markdown."""
  text = _source(cell)
  if cell["cell_type"] == "code":
    return [line.strip()[1:] for line in _logical_lines(text) if line.strip().startswith("!")]
  fenced = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
  inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
  return [line for block in fenced for line in _logical_lines(block)] + inline


def _commands(snippet: str) -> list[list[str]]:
  """The `python -m MODULE args...` argv tails (MODULE first) in one shell line."""
  if not re.search(r"python3? -m ", snippet):
    return []  # prose in code spans need not be valid shell
  lexer = shlex.shlex(snippet, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  words, commands, current = list(lexer), [], []
  for word in words + [";"]:
    if _SHELL_OPERATORS.match(word):
      for i in range(len(current) - 2):
        if re.fullmatch(r"!?python3?", current[i]) and current[i + 1] == "-m":
          commands.append(current[i + 2:])
      current = []
    else:
      current.append(word)
  return commands


def _module_path(module: str) -> pathlib.Path | None:
  if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module):
    return None
  stem = REPO / module.replace(".", "/")
  for path in (stem.with_suffix(".py"), stem / "__main__.py"):
    if path.is_file():
      return path
  return None


def _defined_flags(path: pathlib.Path) -> tuple[set[str], set[str]]:
  """(all flag names, config-file flag names) that `flags.DEFINE_*("name", ...)` define."""
  names, config_names = set(), set()
  for node in ast.walk(ast.parse(path.read_text())):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr.startswith("DEFINE_")):
      continue
    first = node.args[0] if node.args else next(
        (k.value for k in node.keywords if k.arg == "name"), None)
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
      names.add(first.value)
      if node.func.attr in _CONFIG_DEFINES:
        config_names.add(first.value)
  return names, config_names


def _load_config(spec: str) -> ml_collections.ConfigDict:
  """`configs/x.py` or `configs/x.py:arg` -> the ConfigDict its get_config returns."""
  path, _, arg = spec.partition(":")
  module = importlib.import_module(pathlib.Path(path).with_suffix("").as_posix().replace("/", "."))
  return module.get_config(arg) if arg else module.get_config()


def _has_field(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def _all_commands(nb) -> list[list[str]]:
  return [command for cell in nb["cells"] for snippet in _shell_snippets(cell)
          for command in _commands(snippet)]


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request):
  with open(request.param, encoding="utf-8") as f:
    return json.load(f)


def test_notebooks_exist():
  assert {p.name for p in NOTEBOOKS} >= {"duo_llm_tpu.ipynb", "calibrated_prm_tpu.ipynb"}


def test_valid_v4_structure_without_outputs(notebook):
  assert notebook["nbformat"] == 4 and isinstance(notebook["nbformat_minor"], int)
  assert notebook["metadata"]["kernelspec"]["name"] == "python3"
  assert notebook["metadata"].get("accelerator") == "TPU", "a Colab TPU notebook"
  assert notebook["cells"], "no cells"
  ids = []
  for i, cell in enumerate(notebook["cells"]):
    where = f"cell {i}"
    assert cell["cell_type"] in ("markdown", "code", "raw"), where
    assert isinstance(cell["metadata"], dict), where
    source = cell["source"]
    assert isinstance(source, str) or all(isinstance(s, str) for s in source), where
    assert _source(cell).strip(), f"{where} is empty"
    if cell["cell_type"] == "code":
      assert cell["outputs"] == [], f"{where} has stored outputs"
      assert cell["execution_count"] is None, f"{where} has an execution count"
    else:
      assert "outputs" not in cell and "execution_count" not in cell, where
    if notebook["nbformat_minor"] >= 5:  # cell ids are required from 4.5 on
      assert _CELL_ID.match(cell["id"]), where
      ids.append(cell["id"])
  assert len(ids) == len(set(ids)), "duplicate cell ids"


def test_code_cells_parse_as_python(notebook):
  for i, cell in enumerate(notebook["cells"]):
    if cell["cell_type"] != "code":
      continue
    lines = [line for line in _logical_lines(_source(cell))
             if not line.lstrip().startswith(("!", "%"))]
    try:
      ast.parse("\n".join(lines))
    except SyntaxError as e:
      pytest.fail(f"cell {i}: {e}")


def test_commands_name_existing_modules_configs_and_flags(notebook):
  commands = _all_commands(notebook)
  assert commands, "no python -m commands found"
  for module, *args in commands:
    path = _module_path(module)
    assert path is not None, f"python -m {module}: no such module in the repo"
    names, config_names = _defined_flags(path)
    configs = {}
    for arg in args:
      if not arg.startswith("--"):
        continue
      name, _, value = arg[2:].partition("=")
      if name in config_names:
        config_path = REPO / value.partition(":")[0]
        assert config_path.is_file(), f"{module}: --{name}={value}: no such file"
        configs[name] = _load_config(value)
    for arg in args:
      if not arg.startswith("--"):
        continue
      name = arg[2:].partition("=")[0]
      head, _, field = name.partition(".")
      if field and head in config_names:
        assert head in configs, f"{module}: --{name} without --{head}=PATH"
        assert _has_field(configs[head], field), f"{module}: --{name}: no such config field"
      else:
        assert name in names, f"{module}: --{name} is not a flag it defines ({sorted(names)})"


def test_every_python_m_and_config_path_in_any_cell_exists(notebook):
  """Also prose: a module or config named anywhere in a cell must exist."""
  for i, cell in enumerate(notebook["cells"]):
    text = _source(cell)
    for module in re.findall(r"python3? -m ([A-Za-z_][\w.]*)", text):
      assert _module_path(module), f"cell {i}: python -m {module}: no such module"
    for path in re.findall(r"--config=([^\s`\"'\\]+)", text):
      path = path.partition(":")[0]
      assert (REPO / path).is_file(), f"cell {i}: --config={path}: no such file"


def test_command_parser_finds_flags():
  """The helpers see through continuations, chains and quoting (else the checks above pass
  vacuously)."""
  cell = {"cell_type": "code", "source": (
      '!cd x && python -m experiments.oracle --config=configs/oracle_small.py \\\n'
      '    --config.oracle.seed="{SEED}"; python3 -m experiments.duo_figures --workdir=a\n')}
  (snippet,) = _shell_snippets(cell)
  assert _commands(snippet) == [
      ["experiments.oracle", "--config=configs/oracle_small.py", "--config.oracle.seed={SEED}"],
      ["experiments.duo_figures", "--workdir=a"]]
  assert _defined_flags(REPO / "experiments/duo_figures.py") == ({"workdir", "out", "label"}, set())
  assert _defined_flags(REPO / "experiments/oracle.py") == ({"workdir", "config"}, {"config"})
  assert _has_field(_load_config("configs/duo_pbig_ablation.py:0.5"), "routing.p_big")
  assert not _has_field(_load_config("configs/duo_paper.py"), "train.mesh")
