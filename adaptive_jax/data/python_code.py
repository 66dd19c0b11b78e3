"""Python source code as a held-out domain: this interpreter's own standard library.

Every machine with Python has it, so no download is needed. Examples are chunks of about
`_CHUNK_CHARS` characters cut at blank lines of the top-level `.py` files of the standard
library folder (sorted by name; the set depends on the Python version, 3.11 here). One split,
'validation': the Duo models never train on it (the paper's code domain).
"""

import pathlib
import sysconfig

import tensorflow_datasets as tfds

_CHUNK_CHARS = 2000


def stdlib_files() -> list[pathlib.Path]:
  return sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def source_chunks(source: str) -> list[str]:
  """Consecutive blank-line-separated blocks, joined until a chunk passes _CHUNK_CHARS."""
  chunks, current, size = [], [], 0
  for block in source.split("\n\n"):
    current.append(block)
    size += len(block) + 2
    if size >= _CHUNK_CHARS:
      chunks.append("\n\n".join(current))
      current, size = [], 0
  if current and "".join(current).strip():
    chunks.append("\n\n".join(current))
  return chunks


class PythonStdlib(tfds.core.GeneratorBasedBuilder):
  """The top-level modules of Python's standard library, in chunks of source text."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict({"text": tfds.features.Text(),
                                             "module": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager  # Read from this interpreter's installation: nothing to download.
    return {"validation": self._generate_examples(stdlib_files())}

  def _generate_examples(self, files):
    for path in files:
      text = path.read_text(encoding="utf-8", errors="replace")
      for i, chunk in enumerate(source_chunks(text)):
        yield f"{path.stem}/{i:04d}", {"text": chunk, "module": path.stem}
