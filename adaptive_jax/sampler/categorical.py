"""One token per row from softmax(logits) by inverting its cumulative distribution.

`jax.random.categorical` adds V Gumbel variates per row (V threefry draws, two logs per
element, then an argmax). The same distribution comes from one uniform u per row and the
inverse of the row's cumulative distribution: the token is the first j with
cumsum(p)_j > u * sum(p). The sums are taken in two levels (blocks of `BLOCK` tokens, then
tokens inside the chosen block), so no float32 running sum spans more than
max(V / BLOCK, BLOCK) terms and the rounding of one token's share stays near float32's
epsilon. A token of probability 0 (a logit of -inf, as top-p masking writes) is never drawn.
Alone, on 2 CPU cores, a draw from [128, 49152] float32 logits takes 4 ms against
jax.random.categorical's 121 ms; inside the sampler's decode loop the difference is smaller
(SmolLM2 at batch 128, 32 tokens at temperature 0.7: 17.9 s against 18.2 s).

B rows, V vocabulary, N = ceil(V / BLOCK) blocks, K = BLOCK tokens per block.
"""

import jax
import jax.numpy as jnp

BLOCK = 256


def _first_above(cum_N, target, mass_N):
  """First index whose running sum exceeds target; at rounding's edge the last positive one."""
  n = cum_N.shape[-1]
  index = jnp.sum(cum_N <= target, dtype=jnp.int32)
  # target < cum[-1] in exact arithmetic (u < 1); float rounding can reach it, and then the
  # draw belongs to the last entry that holds mass (never a zero-probability one).
  last_positive = n - 1 - jnp.argmax((mass_N > 0)[::-1]).astype(jnp.int32)
  return jnp.minimum(index, last_positive)


def _inverse_cdf_row(u, logits_V):
  v = logits_V.shape[-1]
  n = -(-v // BLOCK)
  logits_V = logits_V.astype(jnp.float32)
  p_NxK = jnp.pad(jnp.exp(logits_V - jnp.max(logits_V)), (0, n * BLOCK - v)).reshape(n, BLOCK)
  mass_N = jnp.sum(p_NxK, axis=-1)
  cum_N = jnp.cumsum(mass_N)
  target = u * cum_N[-1]
  block = _first_above(cum_N, target, mass_N)
  # The rest of the target inside the block; rounding can take it below 0, and 0 still skips
  # the block's leading zero-probability tokens.
  rest = jnp.maximum(target - (cum_N[block] - mass_N[block]), 0.0)
  return block * BLOCK + _first_above(jnp.cumsum(p_NxK[block]), rest, p_NxK[block])


def inverse_cdf(u_B, logits_BxV):
  """token_B (int32): row b's draw from softmax(logits_BxV[b]) at uniform u_B[b] in [0, 1).

  Rows whose logits are all -inf have no distribution; their token is meaningless (as with
  `jax.random.categorical`). B rows, V vocabulary.
  """
  return jax.vmap(_inverse_cdf_row)(u_B, logits_BxV)


def categorical(key_B, logits_BxV):
  """token_B (int32): one draw per row from softmax(logits_BxV), row b from key_B[b]."""
  u_B = jax.vmap(lambda key: jax.random.uniform(key, dtype=jnp.float32))(key_B)
  return inverse_cdf(u_B, logits_BxV)
