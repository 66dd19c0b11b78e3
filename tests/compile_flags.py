"""XLA flags for the suite's processes (and the subprocesses its tests start).

The suite's programs are tiny and numerous: a cold run spends most of its time compiling, not
running. These flags compile with LLVM's cheap pipeline (about a quarter less time for the
study tests, measured cold); every program still computes the same function.
"""

import os

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def with_fast_compile(flags: str = "") -> str:
  """`flags` with FAST_COMPILE after them (once)."""
  return flags if FAST_COMPILE in flags else f"{flags} {FAST_COMPILE}".strip()


def use_fast_compile() -> None:
  """Adds FAST_COMPILE to this process's XLA_FLAGS; call before JAX creates its backend."""
  os.environ["XLA_FLAGS"] = with_fast_compile(os.environ.get("XLA_FLAGS", ""))
