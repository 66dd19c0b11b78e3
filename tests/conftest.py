"""Shared test set-up: XLA flags that compile fast (tests/compile_flags.py), a persistent XLA
compile cache beside the virtual environment, the slowest modules scheduled first, compiled
programs released after each test module (checking the memory maps the process holds), and a
finished tiny stage-1 run for the studies built on it."""

import os
import sys

from tests.compile_flags import use_fast_compile

use_fast_compile()  # before JAX creates its CPU backend

import jax  # noqa: E402
import pytest  # noqa: E402

from adaptive_jax.train.loop import train_and_evaluate  # noqa: E402
from configs import duo_tiny  # noqa: E402

# Compiled programs are cached next to the venv, so a second run of the suite compiles little.
_CACHE = os.path.join(sys.prefix, "jax_compile_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)  # for subprocesses

# At a module's end, before its programs are released, a process must hold fewer maps than
# this. Maps that outlive the release pile up over the modules a process runs: a -n 2 worker
# runs about half of them, so passing here under -n 2 keeps one process that runs them all
# under 2 x 30,000 less the few thousand it starts with, below the kernel's 65,530.
MAX_MAPS = 30_000
_most_maps = 0  # the most seen at a module's end, for the summary line


def _map_count() -> int | None:
  """Lines of /proc/self/maps (None where there is no /proc)."""
  try:
    with open("/proc/self/maps", "rb") as f:
      return sum(1 for _ in f)
  except OSError:
    return None


# The modules that take longest (seconds, -n 2 on 2 cores, cold compile cache), run first:
# `-n 2 --dist loadfile` (pyproject.toml) hands whole modules to the two workers in collection
# order, so a long module started last cannot leave one worker running alone at the end.
SLOW_MODULES_FIRST = (
    "test_calibration_study.py",  # 130
    "test_main_job.py",  # 124
    "test_notebooks.py",  # 118
    "test_pretrained_policy.py",  # 104
    "test_label_free_study.py",  # 101
    "test_prm_model.py",  # 64
    "test_router_study.py",  # 56
    "test_train.py",  # 55
    "test_ias_study.py",  # 44
)


def pytest_collection_modifyitems(items):
  """Moves SLOW_MODULES_FIRST's tests to the front, in that order (the rest keep theirs)."""
  rank = {name: i for i, name in enumerate(SLOW_MODULES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
  """Drops the jit caches after each test module; the disk cache above makes recompiles cheap.

  Every compiled executable keeps its own memory mappings until it is released, and the kernel
  stops a process at vm.max_map_count (65,530 by default): the whole suite in one process
  (pytest without -n) compiles hundreds of programs and used to die after 400-500 tests.
  """
  global _most_maps
  yield
  count = _map_count()
  jax.clear_caches()
  if count is None:
    return
  _most_maps = max(_most_maps, count)
  assert count < MAX_MAPS, (
      f"{count} memory maps at the end of this module (allowed {MAX_MAPS}; the kernel stops "
      "the process near 65,530): compiled programs outlive jax.clear_caches(), or the module "
      "compiles too many shapes")


def pytest_terminal_summary(terminalreporter):
  if _most_maps:  # a process that ran tests, not the -n controller
    terminalreporter.write_line(f"memory maps at module ends: at most {_most_maps} "
                                f"(allowed {MAX_MAPS})")


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
  """A finished 6-step duo_tiny stage-1 run (its workdir), for the oracle and router studies."""
  workdir = str(tmp_path_factory.mktemp("stage1"))
  config = duo_tiny.get_config()
  config.data.data_dir = str(tmp_path_factory.mktemp("data"))
  config.train.num_steps = 6
  train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="session")
def policy_and_calibration_workdirs(tmp_path_factory):
  """(policy_dir, calibrate_dir): a finished tiny policy and calibration study on it
  (`tests.tiny_workdirs.policy_and_calibration`), made once per process for the IAS and
  label-free studies (which only read them)."""
  from tests.tiny_workdirs import policy_and_calibration
  return policy_and_calibration(str(tmp_path_factory.mktemp("policy")),
                                str(tmp_path_factory.mktemp("calibrate")))
