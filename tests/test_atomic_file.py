"""atomic_file: a failed write leaves the old file whole and no tmp file; the library writes
results, npz and config files only through it."""

import json
import os
import pathlib
import re

import numpy as np
import pytest

from adaptive_jax import atomic_file


class _Unpicklable:

  def __reduce__(self):
    raise RuntimeError("cannot pickle")


def test_json_round_trip_and_replaces(tmp_path):
  path = str(tmp_path / "sub" / "results.json")  # the folder is made
  atomic_file.write_json(path, {"a": 1})
  atomic_file.write_json(path, {"a": [1, 2]})
  assert json.loads(pathlib.Path(path).read_text()) == {"a": [1, 2]}
  assert os.listdir(tmp_path / "sub") == ["results.json"]


def test_write_raising_midway_keeps_old_file_and_leaves_no_tmp(tmp_path):
  path = str(tmp_path / "results.json")
  atomic_file.write_json(path, {"old": True})
  seen_during_write = []

  def write(f):
    f.write(b'{"new": tr')  # a partial file...
    f.flush()
    seen_during_write.append(pathlib.Path(path).read_text())  # ...that no reader sees
    raise RuntimeError("killed midway")

  with pytest.raises(RuntimeError, match="killed midway"):
    atomic_file.write_bytes(path, write)
  assert seen_during_write == ['{\n  "old": true\n}']
  assert json.loads(pathlib.Path(path).read_text()) == {"old": True}
  assert os.listdir(tmp_path) == ["results.json"]


def test_npz_failing_after_first_array_keeps_old_file(tmp_path):
  path = str(tmp_path / "predictions.npz")
  atomic_file.write_npz(path, {"x": np.arange(3)})
  bad = np.empty(1, dtype=object)
  bad[0] = _Unpicklable()
  with pytest.raises(RuntimeError, match="cannot pickle"):  # "big" is written first
    atomic_file.write_npz(path, {"big": np.zeros(100_000), "bad": bad})
  with np.load(path) as data:
    assert data.files == ["x"]
    np.testing.assert_array_equal(data["x"], np.arange(3))
  assert os.listdir(tmp_path) == ["predictions.npz"]


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_written_at_exact_path(tmp_path, compressed):
  path = str(tmp_path / "routes.data")  # no ".npz" appended
  atomic_file.write_npz(path, {"r": np.ones((2, 3), np.int32)}, compressed=compressed)
  assert os.listdir(tmp_path) == ["routes.data"]
  with np.load(path) as data:
    np.testing.assert_array_equal(data["r"], np.ones((2, 3), np.int32))


def test_unserializable_json_keeps_old_file(tmp_path):
  path = str(tmp_path / "config.json")
  atomic_file.write_text(path, "old")
  with pytest.raises(TypeError):
    atomic_file.write_json(path, {"x": object()})
  assert pathlib.Path(path).read_text() == "old"
  assert os.listdir(tmp_path) == ["config.json"]


# In-place writes of whole files: json.dump to an open file, np.savez*, open(..., "w"/"wb").
_IN_PLACE = re.compile(r"json\.dump\(|np\.savez(_compressed)?\(|open\([^)]*[\"']wb?[\"']")


def test_library_writes_files_only_through_atomic_file():
  root = pathlib.Path(__file__).resolve().parent.parent / "adaptive_jax"
  offenders = [f"{path.relative_to(root)}:{i}: {line.strip()}"
               for path in sorted(root.rglob("*.py")) if path.name != "atomic_file.py"
               for i, line in enumerate(path.read_text().splitlines(), 1)
               if _IN_PLACE.search(line)]
  assert not offenders, "write these through adaptive_jax.atomic_file:\n" + "\n".join(offenders)
