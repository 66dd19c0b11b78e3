"""Atomic file writes: a reader sees the old file whole or the new file whole, never a part.

Every write goes to `<path>.tmp` in the same folder (so the rename stays on one file system),
is flushed and synced, then renamed over `<path>` with `os.replace`. If the write raises, the
tmp file is removed and `<path>` is left as it was. One writer per file.
"""

import contextlib
import json
import os
from typing import Any, Callable, Iterator

import numpy as np


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
  """Yields the tmp path to write; on a clean exit renames it over `path`, else deletes it.

  For writers that take a file name (array_record's writer); the rest below use it too.
  """
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_bytes(path: str, write: Callable[[Any], None]) -> None:
  """Calls `write(f)` on a binary file object, synced, then moved over `path`."""
  with replacing(path) as tmp:
    with open(tmp, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())


def write_text(path: str, text: str) -> None:
  write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: str, value, *, default: Callable[[Any], Any] | None = None,
               sort_keys: bool = False) -> None:
  """json.dumps(value, indent=2), written atomically; the text is whole before a file opens."""
  write_text(path, json.dumps(value, indent=2, default=default, sort_keys=sort_keys))


def write_npz(path: str, arrays: dict[str, np.ndarray], *, compressed: bool = False) -> None:
  """np.savez (or savez_compressed) of `arrays` written atomically to exactly `path`."""
  save = np.savez_compressed if compressed else np.savez
  # A file object, not a name: savez would append ".npz" to a name.
  write_bytes(path, lambda f: save(f, **arrays))
