"""Runs a script in a subprocess that sees 8 fake CPU devices (the multi-device tests)."""

import os
import subprocess
import sys

import flax
import jax
import numpy as np

from tests.compile_flags import with_fast_compile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {"JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
       "XLA_FLAGS": with_fast_compile("--xla_force_host_platform_device_count=8")}


def run_on_8_devices(script: str, *args: str, timeout: int = 600, cwd=None) -> str:
  """`python -c script *args` on 8 fake devices; its stdout, or the test fails with its stderr."""
  proc = subprocess.run([sys.executable, "-c", script, *args], env={**os.environ, **ENV},
                        cwd=cwd, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def run_with_inputs(script: str, folder, params, cfg, **arrays) -> None:
  """Writes params (folder/params.msgpack) and arrays (folder/inputs.npz), then runs `script`
  with argv = [folder, repr(cfg.__dict__)] on 8 fake devices."""
  (folder / "params.msgpack").write_bytes(flax.serialization.msgpack_serialize(
      jax.tree.map(np.asarray, params)))
  np.savez(folder / "inputs.npz", **arrays)
  run_on_8_devices(script, str(folder), repr(cfg.__dict__), timeout=300)
