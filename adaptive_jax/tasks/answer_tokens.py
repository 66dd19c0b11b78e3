"""`problem.extract_answer` on device: the integer answer of byte-token rows, under `jit`.

Matches what `extract_answer` matches (`answer:` or `####`, spaces or tabs, an optional minus,
a digit, then digits and thousands commas; the first marker followed by a number counts),
within two bounds that keep the windows static: at most `MAX_SPACES` blanks after the marker
(a marker followed by more is skipped) and at most `MAX_DIGITS` digits (int32): a first number
longer than that gives NO_ANSWER where the host parser reads a large int. Answers of this
project's tasks have at most 4 digits.
"""

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


def _number_after(window_BxMxW, offset: int, tokenizer: ByteTokenizer):
  """(found_BxM, fits_BxM, value_BxM): whether a number starts `offset` tokens into each
  window, whether it fits MAX_DIGITS, and its value."""
  blank = jnp.isin(window_BxMxW, _ids(" \t", tokenizer))
  digit_ids = _ids("0123456789", tokenizer)
  comma, minus = _ids(",", tokenizer)[0], _ids("-", tokenizer)[0]
  # Leading blanks, then an optional minus: where the number begins in each window.
  blanks_BxM = jnp.sum(jnp.cumprod(blank[..., offset:offset + MAX_SPACES + 1], axis=-1), -1)
  start_BxM = offset + blanks_BxM
  take = lambda at_BxM: jnp.take_along_axis(window_BxMxW, at_BxM[..., None], -1)[..., 0]
  negative_BxM = take(start_BxM) == minus
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
  """answer_B int32 of each row of byte tokens (pads and specials anywhere); NO_ANSWER if none."""
  tokens_BxM = jnp.asarray(tokens_BxM, jnp.int32)
  longest = max(len(m) for m in _MARKERS) + MAX_SPACES + 1 + MAX_DIGITS + MAX_DIGITS // 3 + 2
  num_tokens = tokens_BxM.shape[1]
  padded_BxT = jnp.pad(tokens_BxM, ((0, 0), (0, longest)), constant_values=tokenizer.pad_id)
  window_BxMxW = padded_BxT[:, jnp.arange(num_tokens)[:, None] + jnp.arange(longest)[None, :]]
  found_BxM = jnp.zeros(tokens_BxM.shape, bool)
  value_BxM = jnp.full(tokens_BxM.shape, NO_ANSWER, jnp.int32)
  for marker in _MARKERS:
    ids = _ids(marker, tokenizer)
    at_marker_BxM = jnp.all(window_BxMxW[..., :len(marker)] == ids, axis=-1)
    ok_BxM, fits_BxM, number_BxM = _number_after(window_BxMxW, len(marker), tokenizer)
    ok_BxM = at_marker_BxM & ok_BxM
    # Markers never start at one position. The first number counts even when too long.
    value_BxM = jnp.where(ok_BxM, jnp.where(fits_BxM, number_BxM, NO_ANSWER), value_BxM)
    found_BxM = found_BxM | ok_BxM
  first_B = jnp.argmax(found_BxM, axis=-1)
  return value_BxM[jnp.arange(tokens_BxM.shape[0]), first_B].astype(jnp.int32)
