"""Shared test set-up: a persistent XLA compile cache beside the virtual environment, compiled
programs released after each test module, and a finished tiny stage-1 run for the studies
built on it."""

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


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
  """Drops the jit caches after each test module; the disk cache above makes recompiles cheap.

  Every compiled executable keeps its own memory mappings until it is released, and the kernel
  stops a process at vm.max_map_count (65,530 by default): the whole suite in one process
  (pytest without -n) compiles hundreds of programs and used to die after 400-500 tests.
  """
  yield
  jax.clear_caches()


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
  """A finished 6-step duo_tiny stage-1 run (its workdir), for the oracle and router studies."""
  workdir = str(tmp_path_factory.mktemp("stage1"))
  config = duo_tiny.get_config()
  config.data.data_dir = str(tmp_path_factory.mktemp("data"))
  config.train.num_steps = 6
  train_and_evaluate(config, workdir)
  return workdir
