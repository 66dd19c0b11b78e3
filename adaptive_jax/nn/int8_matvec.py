"""Weight-only int8 matrix-vector products on CPU through XLA's FFI (int8_matvec.cc).

XLA's CPU backend converts an int8 matmul operand to float before the dot, so int8 weights
decode no faster than float32 ones (measured: an int8 [576, 1536] product 10x slower than the
float32 one). These two custom calls read the int8 weights once, for the few rows of a decode
step (x [R, K], R small):

  matvec_kxn(x_RxK, q_KxN, scale_N) = (x @ q) * scale          a kernel stored [K, N]
  matvec_nxk(x_RxK, q_NxK, scale_N) = (x @ q.T) * scale        the tied embedding [V, D]

The library is compiled on first use with the machine's C++ compiler (`CXX`, default g++) for
its own CPU (-march=native) into a cache folder (`ADAPTIVE_JAX_CACHE`, default
~/.cache/adaptive_jax), keyed by the source, the compiler and jax's FFI headers; a missing
compiler raises naming the command and the config field that asked for it.
"""

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp

SOURCE = pathlib.Path(__file__).with_name("int8_matvec.cc")
TARGETS = {"kxn": ("adaptive_jax_int8_matvec_kxn", "Int8MatvecKxN"),
           "nxk": ("adaptive_jax_int8_matvec_nxk", "Int8MatvecNxK")}


def _compiler() -> str:
  cxx = os.environ.get("CXX", "g++")
  if shutil.which(cxx) is None:
    raise RuntimeError(f"model.int8_matvec='cpu' compiles {SOURCE.name} with a C++ compiler: "
                       f"{cxx!r} is not on PATH (set CXX, or use int8_matvec='xla')")
  return cxx


def _command(cxx: str, out: str) -> list[str]:
  return [cxx, "-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC",
          f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", out]


@functools.cache
def library_path() -> str:
  """The compiled library, built once per source, compiler and FFI headers."""
  cxx = _compiler()
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
  key = hashlib.sha256("\n".join([SOURCE.read_text(), version, " ".join(_command(cxx, "")),
                                  jax.__version__]).encode()).hexdigest()[:16]
  cache = pathlib.Path(os.environ.get("ADAPTIVE_JAX_CACHE",
                                      pathlib.Path.home() / ".cache" / "adaptive_jax"))
  path = cache / f"int8_matvec-{key}.so"
  if not path.exists():
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    done = subprocess.run(_command(cxx, tmp), capture_output=True, text=True)
    if done.returncode:
      os.unlink(tmp)
      raise RuntimeError(f"compiling {SOURCE.name} failed ({' '.join(_command(cxx, tmp))}):\n"
                         f"{done.stderr[-2000:]}")
    os.replace(tmp, path)  # another process may have built it too: the same bytes
  return str(path)


@functools.cache
def _register() -> None:
  lib = ctypes.cdll.LoadLibrary(library_path())
  for name, symbol in TARGETS.values():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")


def _call(layout: str, x_RxK, q, scale_N):
  _register()
  n = q.shape[1] if layout == "kxn" else q.shape[0]
  out = jax.ShapeDtypeStruct((x_RxK.shape[0], n), jnp.float32)
  return jax.ffi.ffi_call(TARGETS[layout][0], out)(
      x_RxK.astype(jnp.float32), q, scale_N.reshape(n).astype(jnp.float32))


def matvec_kxn(x_RxK, q_KxN, scale_N):
  """(x @ q) * scale, float32 [R, N], reading the int8 q [K, N] once."""
  return _call("kxn", x_RxK, q_KxN, scale_N)


def matvec_nxk(x_RxK, q_NxK, scale_N):
  """(x @ q.T) * scale, float32 [R, N], reading the int8 q [N, K] once."""
  return _call("nxk", x_RxK, q_NxK, scale_N)
