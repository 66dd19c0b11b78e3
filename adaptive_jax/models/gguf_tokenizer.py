"""A GGUF file's byte-level BPE tokenizer (`tokenizer.ggml.*` metadata), built with `tokenizers`.

GPT-2 style: text is split by a regex, each piece's UTF-8 bytes are spelled in GPT-2's printable
byte alphabet (" " -> "Ġ", "\n" -> "Ċ") and merged by the file's ranked merges. The split is
llama.cpp's for the file's `tokenizer.ggml.pre`; SmolLM2's ("smollm") first isolates every digit,
so "2024" is four tokens, as in the model's own tokenizer.json (Digits + ByteLevel). Tokens the
file marks as control (type 3: "<|im_start|>", "<|endoftext|>") are matched whole in the text.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from adaptive_jax.models.gguf import GGUFError, GGUFFile

_CONTROL, _USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values (llama.cpp's enum)

# tokenizer.ggml.pre -> does the split isolate digits before the GPT-2 regex?
_PRE_TOKENIZERS = {"default": False, "gpt2": False, "smollm": True}


@dataclasses.dataclass(frozen=True)
class BPETokenizer:
  """encode/decode of a GGUF vocabulary; `encode` adds BOS only where the file asks for it."""
  backend: tokenizers.Tokenizer = dataclasses.field(repr=False)
  bos_id: int | None
  eos_id: int | None
  add_bos: bool = False

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size()

  def encode(self, text: str) -> list[int]:
    ids = self.backend.encode(text, add_special_tokens=False).ids
    return [self.bos_id] + ids if self.add_bos and self.bos_id is not None else ids

  def decode(self, ids: Sequence[int] | np.ndarray, skip_special: bool = False) -> str:
    return self.backend.decode(np.asarray(ids, np.int64).tolist(),
                               skip_special_tokens=skip_special)

  def token_id(self, token: str) -> int:
    """The id of one token as the vocabulary spells it ("<|im_end|>"); KeyError if absent."""
    index = self.backend.token_to_id(token)
    if index is None:
      raise KeyError(f"token {token!r} is not in the vocabulary")
    return index


def from_gguf(file: GGUFFile) -> BPETokenizer:
  """The tokenizer described by the file's metadata."""
  kind = file.require("tokenizer.ggml.model")
  if kind != "gpt2":
    raise GGUFError(f"{file.path}: tokenizer.ggml.model {kind!r} is not supported; "
                    f"this builder reads byte-level BPE ('gpt2') only")
  pre = file.get("tokenizer.ggml.pre", "default")
  if pre not in _PRE_TOKENIZERS:
    raise GGUFError(f"{file.path}: pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not supported; "
                    f"supported: {sorted(_PRE_TOKENIZERS)}")
  tokens = list(file.require("tokenizer.ggml.tokens"))
  merges = [tuple(m.split(" ", 1)) for m in file.require("tokenizer.ggml.merges")]
  types = list(file.get("tokenizer.ggml.token_type", [1] * len(tokens)))
  backend = tokenizers.Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                                            merges=merges))
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  backend.pre_tokenizer = (
      pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
      if _PRE_TOKENIZERS[pre] else byte_level)
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                              for t, k in zip(tokens, types) if k == _CONTROL])
  backend.add_tokens([tokenizers.AddedToken(t, special=False, normalized=False)
                      for t, k in zip(tokens, types) if k == _USER_DEFINED])
  if backend.get_vocab_size() != len(tokens):
    raise GGUFError(f"{file.path}: the tokenizer has {backend.get_vocab_size()} tokens, the "
                    f"file lists {len(tokens)} (duplicate tokens?)")
  as_id = lambda key: None if file.get(key) is None else int(file.get(key))
  return BPETokenizer(backend, bos_id=as_id("tokenizer.ggml.bos_token_id"),
                      eos_id=as_id("tokenizer.ggml.eos_token_id"),
                      add_bos=bool(file.get("tokenizer.ggml.add_bos_token", False)))


@dataclasses.dataclass(frozen=True)
class TaskTokenizer:
  """A BPE through the byte tokenizer's interface (`tasks.byte_tokenizer`), so the task pipeline
  (`policy.evaluate.complete`, the MC labels, the PRM's `encode_texts`) takes a pretrained
  model's vocabulary unchanged: EOS starts every sequence and ends every answer, `pad_id` fills
  rows and must be a token that text never encodes to, `decode` drops special tokens.

  Why not the file's padding id: SmolLM2's is its EOS (<|im_end|>, 2), and the PRM finds a
  row's last real token as its last non-pad one, so EOS and pad must differ; its
  <|endoftext|> (0) never comes out of `encode`.
  """
  bpe: BPETokenizer
  pad_id: int
  eos_id: int

  def __post_init__(self):
    if self.pad_id == self.eos_id:
      raise ValueError(f"pad_id and eos_id must differ, both are {self.pad_id}")
    for name in ("pad_id", "eos_id"):
      if not 0 <= getattr(self, name) < self.bpe.vocab_size:
        raise ValueError(f"{name} must be a token id in [0, {self.bpe.vocab_size}), got "
                         f"{getattr(self, name)}")

  @classmethod
  def from_tokens(cls, bpe: BPETokenizer, pad: str, eos: str) -> "TaskTokenizer":
    return cls(bpe, pad_id=bpe.token_id(pad), eos_id=bpe.token_id(eos))

  @property
  def vocab_size(self) -> int:
    return self.bpe.vocab_size

  def encode(self, text: str) -> list[int]:
    ids = self.bpe.backend.encode(text, add_special_tokens=False).ids
    if self.pad_id in ids:
      raise ValueError(f"text encodes to the pad token {self.pad_id}: {text[:40]!r}")
    return ids

  def decode(self, ids) -> str:
    return self.bpe.decode(ids, skip_special=True)
