"""Sample pools on disk: compressed .npz files written atomically, and the chunk files that
`draws.build_pool` writes as it draws, so a killed build resumes.

A pool file holds the Pool's fields under their names, integers in the smallest of uint8,
uint16, int16 and int32 that holds them (tokens uint16 below 65536; answers stay int32 because
NO_ANSWER is int32's minimum), floats as float32 (confidences too: the replayed early stop
compares their window means with thresholds, so they must round-trip bit for bit), bools as
bool; `load_pool` gives back int32, float32 and bool. Named extras go under "extra/", so they
never collide with a field. A pool built with a path also carries its build settings as
extras named "build_<setting>".

While `build_pool(..., path=p)` runs, chunk `start` (rows start.. of the question-major list
of (q, s) pairs) is the file `p.parts/<start>.npz`: the rows' fields (`answers_B`,
`scores_BxC`, ...) and the build settings. Once `p` is written whole the parts are deleted.
Every write goes to `<file>.tmp` in the same folder, then `os.replace`: a reader sees a whole
file or none. One writer per file.
"""

import os
import re
import shutil

import numpy as np

from adaptive_jax import atomic_file
from adaptive_jax.sampler.draws import Pool

# The in-memory dtype of a field, by its name before the shape suffix ("scores_QxNxC").
_DTYPES = {"answers": np.int32, "scores": np.float32, "confidence": np.float32,
           "lengths": np.int32, "stopped": np.bool_, "prompt_len": np.int32, "tokens": np.int32}
_EXTRA = "extra/"
_PART = re.compile(r"(\d+)\.npz")


def save_pool(path: str, pool: Pool, **extra) -> None:
  """Writes `pool` and the named arrays `extra` (saved as given) to the .npz `path`."""
  answers_QxN = np.asarray(pool.answers_QxN)
  for name, x in pool._asdict().items():
    lead = answers_QxN.shape[:1] if name == "prompt_len_Q" else answers_QxN.shape
    if np.shape(x)[:len(lead)] != lead:
      raise ValueError(f"Pool.{name} has shape {np.shape(x)}, answers_QxN {answers_QxN.shape}")
  save_fields(path, pool._asdict(), **extra)


def load_pool(path: str) -> tuple[Pool, dict[str, np.ndarray]]:
  """(pool, extra) as `save_pool` wrote them, fields in their in-memory dtypes."""
  fields, extra = load_fields(path)
  if set(fields) != set(Pool._fields):
    raise ValueError(f"{path}: pool fields {sorted(fields)}, expected {sorted(Pool._fields)}")
  return Pool(**fields), extra


def drop_confidences(pool: Pool) -> Pool:
  """`pool` with confidence_QxNxM cut to width 1 (zeros), for a compact committed copy.

  It still replays, with `PoolDraw(confidence_window=0)`, every rule that reads no confidence:
  fixed N (`StopRule()`), adaptive_consistency, budget allocation, majority and PRM-weighted
  votes, token counts (a nonzero window stops nothing without DeepConf's bar either).
  Not DeepConf: its early stop needs the token confidences, and its warm-up bar, consensus
  and confidence-weighted vote would see every trace's lowest group confidence as 0; nor a
  probe or target function that reads confidences.
  """
  q, n = np.shape(pool.answers_QxN)
  return pool._replace(confidence_QxNxM=np.zeros((q, n, 1), np.float32))


def save_fields(path: str, fields: dict, **extra) -> None:
  """Writes `fields` (names as in Pool or `draws._pool_rows`) compactly, and `extra` as given."""
  arrays = {}
  for name, x in fields.items():
    arrays[name] = _compact(np.asarray(x, _dtype(name, path)))
  for name, x in extra.items():
    x = np.asarray(x)
    if x.dtype == object:
      raise ValueError(f"extra {name!r} must be a numeric, bool or string array, got objects")
    arrays[_EXTRA + name] = x
  _write_npz(path, arrays)


def load_fields(path: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(fields in their in-memory dtypes, extra) of a file `save_fields` wrote."""
  fields, extra = {}, {}
  with np.load(path, allow_pickle=False) as saved:
    for name in saved.files:
      if name.startswith(_EXTRA):
        extra[name[len(_EXTRA):]] = saved[name]
      else:
        fields[name] = saved[name].astype(_dtype(name, path))
  return fields, extra


def check_settings(where: str, extra: dict, settings: dict) -> None:
  """Raises a ValueError naming every build setting in which `extra` differs from `settings`."""
  wrong = [f"{name.removeprefix('build_')}: {extra.get(name)} there, {value} now"
           for name, value in settings.items()
           if name not in extra or not np.array_equal(extra[name], value)]
  if wrong:
    raise ValueError(f"{where} was built with other settings ({'; '.join(wrong)}): rerun with "
                     "its settings or delete it")


def parts_dir(path: str) -> str:
  return path + ".parts"


def save_part(path: str, start: int, fields: dict, settings: dict) -> None:
  """Writes the chunk of rows from `start` of the pool being built at `path`."""
  save_fields(os.path.join(parts_dir(path), f"{start}.npz"), fields, **settings)


def load_parts(path: str, settings: dict) -> dict[int, dict[str, np.ndarray]]:
  """{start: fields} of every chunk written for `path`, each checked against `settings`."""
  folder = parts_dir(path)
  parts = {}
  for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    match = _PART.fullmatch(file)
    if match:  # skips `<start>.npz.tmp`, a write a kill cut short
      fields, extra = load_fields(os.path.join(folder, file))
      check_settings(os.path.join(folder, file), extra, settings)
      parts[int(match.group(1))] = fields
  return parts


def remove_parts(path: str) -> None:
  shutil.rmtree(parts_dir(path), ignore_errors=True)


def _dtype(name: str, path: str):
  stem = name.rsplit("_", 1)[0]
  if stem not in _DTYPES:
    raise ValueError(f"{path}: unknown pool field {name!r} (known: {sorted(_DTYPES)})")
  return _DTYPES[stem]


def _compact(x: np.ndarray) -> np.ndarray:
  """Integers in the smallest of uint8, uint16, int16, int32 that holds them; others as is."""
  if not np.issubdtype(x.dtype, np.integer):
    return x
  lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
  for dtype in (np.uint8, np.uint16, np.int16):
    if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
      return x.astype(dtype)
  return x


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """np.savez_compressed to `path + ".tmp"`, synced, then renamed over `path`."""
  atomic_file.write_npz(path, arrays, compressed=True)
