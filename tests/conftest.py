"""Shared test set-up: a persistent XLA compile cache beside the virtual environment, compiled
programs released after each test module (checking the memory maps the process holds), and a
finished tiny stage-1 run for the studies built on it."""

import os
import sys

import jax
import pytest

from adaptive_jax.train.loop import train_and_evaluate
from configs import duo_tiny

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
