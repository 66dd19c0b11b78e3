"""Shared test set-up: a persistent XLA compile cache beside the virtual environment."""

import os
import sys

import jax

# Compiled programs are cached next to the venv, so a second run of the suite compiles little.
_CACHE = os.path.join(sys.prefix, "jax_compile_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)  # for subprocesses
