"""`problem.extract_answer` on device: the integer answer of byte-token rows, under `jit`.

Matches what `extract_answer` matches (`answer:` or `####`, spaces or tabs, an optional minus,
a digit, then digits and thousands commas; the first marker followed by a number counts),
within two bounds that keep the windows static: at most `MAX_SPACES` blanks after the marker
(a marker followed by more is skipped) and at most `MAX_DIGITS` digits (int32): a first number
longer than that gives NO_ANSWER where the host parser reads a large int. Answers of this
project's tasks have at most 4 digits.

On a BPE vocabulary (`models.gguf_tokenizer.TaskTokenizer`) the same holds where the marker is
encoded as it is alone (SmolLM2: "answer" ":" at the start of a line), the digits are single
tokens with consecutive ids (SmolLM2 isolates digits), a blank is any token made of spaces
and tabs only and a minus any token of blanks then "-" (SmolLM2 writes " -" as one token); a
marker merged into a longer token (" answer:", or "answer:-8" where ":-" is one token) is not
seen; the task writes "answer: <n>" at the start of a line, which is.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer

NO_ANSWER = int(np.iinfo(np.int32).min)  # the same sentinel as sampler.selection
MAX_SPACES = 4
MAX_DIGITS = 9
_MARKERS = ("answer:", "####")


def _ids(text: str, tokenizer: ByteTokenizer) -> jnp.ndarray:
  return jnp.asarray(tokenizer.encode(text), jnp.int32)


@functools.lru_cache(maxsize=4)
def step_end_ids(tokenizer) -> tuple[int, ...]:
  """Every token whose text holds a newline: the end of a step (one line). One id on the byte
  tokenizer; on a BPE every merged piece that holds one ("\n", "\n\n", "\n   ", ...)."""
  return tuple(i for i in range(tokenizer.vocab_size) if "\n" in tokenizer.decode([i]))


@functools.lru_cache(maxsize=4)
def _blank_ids(tokenizer) -> tuple[int, ...]:
  """Every token whose text is spaces and tabs only."""
  return tuple(i for i in range(tokenizer.vocab_size)
               if (text := tokenizer.decode([i])) and not text.strip(" \t"))


@functools.lru_cache(maxsize=4)
def _minus_ids(tokenizer) -> tuple[int, ...]:
  """Every token whose text is "-" after blanks."""
  return tuple(i for i in range(tokenizer.vocab_size)
               if (text := tokenizer.decode([i])).endswith("-") and not text[:-1].strip(" \t"))


@functools.lru_cache(maxsize=4)
def _digit_ids(tokenizer) -> np.ndarray:
  ids = np.array([tokenizer.encode(str(d)) for d in range(10)])
  if ids.shape != (10, 1) or not np.array_equal(ids[:, 0], ids[0, 0] + np.arange(10)):
    raise ValueError(f"the digits must be single tokens with consecutive ids, got {ids.tolist()}")
  return ids[:, 0]


def _number_after(window_BxMxW, offset: int, tokenizer: ByteTokenizer):
  """(found_BxM, fits_BxM, value_BxM): whether a number starts `offset` tokens into each
  window, whether it fits MAX_DIGITS, and its value."""
  blank = jnp.isin(window_BxMxW, jnp.asarray(_blank_ids(tokenizer), jnp.int32))
  digit_ids = jnp.asarray(_digit_ids(tokenizer), jnp.int32)
  comma, minus_ids = _ids(",", tokenizer)[0], jnp.asarray(_minus_ids(tokenizer), jnp.int32)
  # Leading blanks, then an optional minus: where the number begins in each window.
  blanks_BxM = jnp.sum(jnp.cumprod(blank[..., offset:offset + MAX_SPACES + 1], axis=-1), -1)
  start_BxM = offset + blanks_BxM
  take = lambda at_BxM: jnp.take_along_axis(window_BxMxW, at_BxM[..., None], -1)[..., 0]
  negative_BxM = jnp.isin(take(start_BxM), minus_ids)
  start_BxM = start_BxM + negative_BxM
  found_BxM = (blanks_BxM <= MAX_SPACES) & jnp.isin(take(start_BxM), digit_ids)
  value_BxM = jnp.zeros(found_BxM.shape, jnp.int32)
  running_BxM = found_BxM
  num_digits_BxM = jnp.zeros(found_BxM.shape, jnp.int32)
  for i in range(MAX_DIGITS + MAX_DIGITS // 3 + 1):  # digits and commas, one more to see the end
    token_BxM = take(start_BxM + i)
    is_digit_BxM = jnp.isin(token_BxM, digit_ids)
    running_BxM = running_BxM & (is_digit_BxM | (token_BxM == comma))
    counted_BxM = running_BxM & is_digit_BxM
    value_BxM = jnp.where(counted_BxM, value_BxM * 10 + (token_BxM - digit_ids[0]), value_BxM)
    num_digits_BxM = num_digits_BxM + counted_BxM
  # Still running after the last position read: too long to be an int32 answer here.
  fits_BxM = ~running_BxM & (num_digits_BxM <= MAX_DIGITS)
  return found_BxM, fits_BxM, jnp.where(negative_BxM, -value_BxM, value_BxM)


def extract_answer_ids(tokens_BxM, tokenizer: ByteTokenizer = ByteTokenizer()) -> jax.Array:
  """answer_B int32 of each row of tokens (pads and specials anywhere); NO_ANSWER if none."""
  tokens_BxM = jnp.asarray(tokens_BxM, jnp.int32)
  longest = max(len(m) for m in _MARKERS) + MAX_SPACES + 1 + MAX_DIGITS + MAX_DIGITS // 3 + 2
  num_tokens = tokens_BxM.shape[1]
  padded_BxT = jnp.pad(tokens_BxM, ((0, 0), (0, longest)), constant_values=tokenizer.pad_id)
  window_BxMxW = padded_BxT[:, jnp.arange(num_tokens)[:, None] + jnp.arange(longest)[None, :]]
  found_BxM = jnp.zeros(tokens_BxM.shape, bool)
  value_BxM = jnp.full(tokens_BxM.shape, NO_ANSWER, jnp.int32)
  for marker in _MARKERS:
    ids = _ids(marker, tokenizer)
    at_marker_BxM = jnp.all(window_BxMxW[..., :len(ids)] == ids, axis=-1)
    ok_BxM, fits_BxM, number_BxM = _number_after(window_BxMxW, len(ids), tokenizer)
    ok_BxM = at_marker_BxM & ok_BxM
    # Markers never start at one position. The first number counts even when too long.
    value_BxM = jnp.where(ok_BxM, jnp.where(fits_BxM, number_BxM, NO_ANSWER), value_BxM)
    found_BxM = found_BxM | ok_BxM
  first_B = jnp.argmax(found_BxM, axis=-1)
  return value_BxM[jnp.arange(tokens_BxM.shape[0]), first_B].astype(jnp.int32)
