"""The Colab notebooks are valid, output-free, name only modules, configs and flags that exist,
and run end to end.

Structural checks read the JSON; the execution tests run every notebook headless on CPU in a
kernel of this interpreter (nbclient), with tiny models set through its `parameters` cell.
"""

import ast
import importlib
import json
import os
import pathlib
import re
import shlex
import sys

import ml_collections
import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellExecutionError

from configs import duo_tiny

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


def test_every_notebook_is_executed_here_and_linked_from_the_docs():
  assert {p.name for p in NOTEBOOKS} == set(_TINY_FLAGS)  # each one runs in the tests below
  docs = "".join(path.read_text() for path in [REPO / "README.md", *(REPO / "docs").glob("*.md")])
  for path in NOTEBOOKS:
    assert f"notebooks/{path.name}" in docs, f"no doc links {path.name}"


# Each notebook's entry points, in the order its cells run them: its paper's pipeline.
_PIPELINES = {
    "duo_llm_tpu.ipynb": ["experiments.train_duo", "experiments.oracle",
                          "experiments.duo_figures", "experiments.oracle_figures"],
    "calibrated_prm_tpu.ipynb": ["experiments.train_policy", "experiments.calibrate",
                                 "experiments.calibrate_figures", "experiments.ias",
                                 "experiments.ias_figures"],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_its_pipeline_with_configs_made_for_each_command(path):
  nb = json.loads(path.read_text())
  code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
  commands = [command for cell in code for snippet in _shell_snippets(cell)
              for command in _commands(snippet)]
  # Every `python -m` of a `!` line is a command the flag checks above read (none escapes them).
  shell = [line for cell in code for line in _logical_lines(_source(cell))
           if line.strip().startswith("!")]
  assert len(commands) == sum(len(re.findall(r"python3? -m ", line)) for line in shell)
  assert [module for module, *_ in commands] == _PIPELINES[path.name]
  for module, *args in commands:
    configs = [arg.partition("=")[2].partition(":")[0] for arg in args
               if arg.startswith("--config=")]
    for config in configs:  # the config's docstring gives the command that runs it
      assert f"python -m {module} --config={config}" in (REPO / config).read_text(), (
          module, config)
      assert not _has_field(_load_config(config), "no_such_section.field")  # not vacuous
    assert configs or not _defined_flags(_module_path(module))[1], f"{module} needs --config"


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


# Execution. `!python -m ...` lines run as subprocesses that find `python` on PATH: the kernel
# gets this interpreter's bin directory first, so they use this environment's packages.

_KERNEL = "adaptive_jax_test"


def run_notebook(nb, parameters: dict, cwd: pathlib.Path):
  """Executes `nb` (a NotebookNode, changed in place) in a fresh kernel of this interpreter.

  `parameters` are assigned in a cell inserted after the one tagged "parameters", as papermill
  does; each must be a name that cell assigns. The first cell that raises stops the run with
  nbclient's CellExecutionError: the cell's source, what it printed, the traceback.
  """
  (index,) = [i for i, cell in enumerate(nb.cells)
              if "parameters" in cell.metadata.get("tags", [])]
  assigned = {target.id for node in ast.parse(nb.cells[index].source).body
              if isinstance(node, ast.Assign) for target in node.targets}
  if unknown := set(parameters) - assigned:
    raise ValueError(f"not assigned in the parameters cell: {sorted(unknown)}")
  nb.cells.insert(index + 1, nbformat.v4.new_code_cell(
      "\n".join(f"{name} = {value!r}" for name, value in parameters.items()),
      metadata={"tags": ["injected-parameters"]}))
  # A kernelspec of our own: a user-level "python3" spec may point at another interpreter.
  spec_dir = cwd / "kernels" / _KERNEL
  spec_dir.mkdir(parents=True, exist_ok=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "adaptive_jax tests", "language": "python"}))
  specs = KernelSpecManager(kernel_dirs=[str(cwd / "kernels")], ensure_native_kernel=False)
  client = nbclient.NotebookClient(
      nb, km=AsyncKernelManager(kernel_name=_KERNEL, kernel_spec_manager=specs), timeout=600,
      extra_arguments=["--InteractiveShell.colors=nocolor"],  # plain tracebacks in the error
      resources={"metadata": {"path": str(cwd)}})
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
  client.execute(env=env)
  return nb


def _flags(values: dict) -> str:
  """`--config.KEY=VALUE` flags, quoted: `{NAME}` in a `!` line is pasted into the shell as is."""
  return shlex.join(f"--config.{key}={value}" for key, value in values.items())


def _tiny_policy_model(prefix: str) -> dict:
  """tests/test_ias_study.py's _tiny_model: 1 layer of width 32."""
  return {f"{prefix}.num_layers": 1, f"{prefix}.d_model": 32, f"{prefix}.d_ff_big": 64,
          f"{prefix}.num_heads": 2, f"{prefix}.head_dim": 16}


# Per notebook, its *_FLAGS for a run of seconds per step: the model of configs/duo_tiny.py and
# the study sizes of tests/test_oracle_study.py and tests/test_ias_study.py.
_TINY_FLAGS = {
    "duo_llm_tpu.ipynb": lambda workdir: {
        "STAGE1_FLAGS": _flags({
            **{f"model.{key}": value for key, value in duo_tiny.get_config().model.items()},
            "data.data_dir": workdir / "data", "train.num_steps": 6, "train.lr_decay_steps": 6,
            "train.warmup_steps": 2, "train.log_every": 3, "train.checkpoint_every": 3,
            "eval.num_batches": 2}),
        "ORACLE_FLAGS": _flags({
            "oracle.num_sequences": 4, "oracle.seq_len": 16, "oracle.chunk_sequences": 2,
            "oracle.split_depth": 2, "oracle.budgets": (0, 1, 2, 3),
            "oracle.sequential_sequences": 2, "oracle.sequential_seq_len": 8,
            "oracle.sequential_budgets": (0, 1, 3), "oracle.skip_patterns": 40,
            "oracle.skip_sequences": 2, "oracle.text_budget": 1}),
    },
    "calibrated_prm_tpu.ipynb": lambda workdir: {
        "POLICY_FLAGS": _flags({
            **_tiny_policy_model("model"), "task.train_difficulties": (1,), "task.seq_len": 72,
            "task.batch_size": 4,
            "task.max_new_tokens": 8, "task.eval_problems_per_difficulty": 1,
            "train.num_steps": 3, "train.warmup_steps": 1, "train.lr_decay_steps": 3,
            "train.log_every": 3}),
        "CALIBRATE_FLAGS": _flags({
            **_tiny_policy_model("prm.model"), "mc.calibration_questions": 8,
            "mc.test_questions": 8, "mc.conformal_questions": 4, "mc.base_questions": 4,
            "mc.num_responses": 1, "mc.num_rollouts": 2, "mc.max_steps": 1,
            "mc.max_new_tokens": 16, "mc.questions_per_shard": 8, "prm.base_steps": 2,
            "prm.step_verifier_steps": 2,
            "prm.calibration_steps": 2, "prm.batch_size": 4}),
        "IAS_FLAGS": _flags({
            "ias.design_questions": 8, "ias.validation_questions": 8, "ias.test_questions": 8,
            "ias.control_questions": 8, "ias.design_difficulties": (1, 2),
            "ias.temperatures": (0.7,), "ias.n_max": 4, "ias.fixed_ns": (1, 2, 4),
            "ias.ias_n_maxes": (2, 4), "ias.orders": 3, "ias.qs": (0.5, 0.99),
            "ias.budgets": (1.0, 2.0), "ias.online_solved_at": (0.5,),
            "ias.online_n_maxes": (2, 4),
            "regime.n_max_choices": (2, 4), "ias.per_round": 2, "ias.rows": 8, "ias.pool_rows": 16,
            "ias.max_new_tokens": 12, "ias.deepconf_warmup": 2, "ias.group_window": 4,
            "ias.bootstrap_resamples": 50, "beam.questions": 4, "beam.fixed": ((1, 2), (2, 2)),
            "beam.max_steps": 3, "beam.num_beams": 2, "beam.expansions": 2,
            "beam.max_step_tokens": 8}),
    },
}


def _cpu_parameters(tmp_path: pathlib.Path) -> dict:
  """This checkout, nothing installed, results under tmp_path."""
  return {"IN_COLAB": False, "REPO_DIR": str(REPO), "WORKDIR": str(tmp_path / "workdir")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_headless_on_cpu(path, tmp_path):
  parameters = _cpu_parameters(tmp_path)
  parameters.update(_TINY_FLAGS[path.name](tmp_path / "workdir"))
  nb = run_notebook(nbformat.read(path, as_version=4), parameters, tmp_path)
  # The figure cells show what the runs wrote (an empty glob would pass silently).
  for cell in nb.cells:
    if cell.cell_type == "code" and "display(Image" in cell.source:
      assert any("image/png" in out.get("data", {}) for out in cell.outputs), cell.source


def test_a_raising_cell_fails_the_run(tmp_path):
  nb = nbformat.read(REPO / "notebooks" / "duo_llm_tpu.ipynb", as_version=4)
  (index,) = [i for i, cell in enumerate(nb.cells) if "experiments.train_duo" in cell.source
              and cell.cell_type == "code"]
  nb.cells[index].source = 'raise RuntimeError("a planted failure")'
  with pytest.raises(CellExecutionError, match="a planted failure"):
    run_notebook(nb, _cpu_parameters(tmp_path), tmp_path)
  index += 1  # the injected parameters cell came before it
  assert nb.cells[index].outputs and nb.cells[index - 1].execution_count is not None
  assert all(cell.get("execution_count") is None for cell in nb.cells[index + 1:])
  with pytest.raises(ValueError, match="NO_SUCH_PARAMETER"):
    run_notebook(nb, {"NO_SUCH_PARAMETER": 1}, tmp_path)


def test_a_failing_command_fails_the_run(tmp_path):
  """IPython does not raise when a `!` command exits nonzero: the notebook's checks must."""
  nb = nbformat.read(REPO / "notebooks" / "calibrated_prm_tpu.ipynb", as_version=4)
  parameters = {**_cpu_parameters(tmp_path), "POLICY_FLAGS": "--config.no_such_field=1"}
  with pytest.raises(CellExecutionError, match="the policy's training failed") as raised:
    run_notebook(nb, parameters, tmp_path)
  assert "AttributeError: \"'no_such_field'\"" in str(raised.value)  # the command's own error
