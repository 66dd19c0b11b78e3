"""A byte-level tokenizer for task text: lossless, nothing to train, the same on every machine."""

import dataclasses

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
_OFFSET = 3  # byte b has id b + 3


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
  """UTF-8 bytes shifted past three special ids (pad, bos, eos)."""
  pad_id: int = PAD_ID
  bos_id: int = BOS_ID
  eos_id: int = EOS_ID

  @property
  def vocab_size(self) -> int:
    return 256 + _OFFSET

  def encode(self, text: str) -> list[int]:
    return [b + _OFFSET for b in text.encode("utf-8")]

  def decode(self, ids) -> str:
    """Bytes of the non-special ids; special ids are dropped."""
    return bytes(int(i) - _OFFSET for i in ids if int(i) >= _OFFSET).decode("utf-8", "replace")
