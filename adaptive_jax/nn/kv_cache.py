"""The key/value cache of every layer, and what one model call reads from and writes to it.

Caches are heads-major, one [B, K, S, H] array per layer (S slots): layer l writes its new keys
and values at slots `slot .. slot + T - 1` with one `dynamic_update_slice`, in place inside a
jitted loop, and attends over its own array. One array per layer rather than one [L, ...]
stack: reading a layer's slice out of a stack copies it (on CPU that made decoding 1.5x
slower at B=128, S=227), a separate array is read where it lies. A query at slot `slot + t`
reads the slots where `mask_BxTxS` is True; the default is causal over slots (slot s <=
slot + t), right when every row starts at slot 0. Left-padded rows (the sampler) pass their
own mask so that no query reads a pad slot.

Letters here: K key/value heads, S cache slots, H head width.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from adaptive_jax.nn.config import ModelConfig


class KVCache(NamedTuple):
  k_BxKxSxH: tuple[jax.Array, ...]  # one per layer
  v_BxKxSxH: tuple[jax.Array, ...]

  @classmethod
  def zeros(cls, cfg: ModelConfig, batch: int, num_slots: int) -> "KVCache":
    shape = (batch, cfg.kv_heads, num_slots, cfg.head_dim)
    zeros = tuple(jnp.zeros(shape, cfg.activation_dtype) for _ in range(cfg.num_layers))
    return cls(zeros, zeros)

  @property
  def num_slots(self) -> int:
    return self.k_BxKxSxH[0].shape[2]

  def write(self, layer: int, slot, k_BxTxKxH, v_BxTxKxH) -> "KVCache":
    """Layer `layer`'s keys and values of T tokens at slots slot .. slot + T - 1 (`slot` one
    integer, or one per row)."""
    put = lambda caches, new: caches[:layer] + (_put(caches[layer], new, slot),) + \
        caches[layer + 1:]
    return KVCache(put(self.k_BxKxSxH, k_BxTxKxH), put(self.v_BxKxSxH, v_BxTxKxH))

  def layer(self, layer: int):
    """(k_BxKxSxH, v_BxKxSxH) of one layer."""
    return self.k_BxKxSxH[layer], self.v_BxKxSxH[layer]


def _put(cache_BxKxSxH, new_BxTxKxH, slot):
  new_BxKxTxH = jnp.swapaxes(new_BxTxKxH, 1, 2).astype(cache_BxKxSxH.dtype)
  if jnp.ndim(slot) == 0:
    return jax.lax.dynamic_update_slice(cache_BxKxSxH, new_BxKxTxH, (0, 0, slot, 0))
  return jax.vmap(lambda c_KxSxH, n_KxTxH, s: jax.lax.dynamic_update_slice(
      c_KxSxH, n_KxTxH, (0, s, 0)))(cache_BxKxSxH, new_BxKxTxH, slot)


class CacheAccess(NamedTuple):
  """What one call does with the cache: its T tokens go to slots `slot` .. (one slot for every
  row, or slot_B, one per row); query t reads the slots where mask_BxTxS[:, t] is True."""
  slot: jax.Array
  mask_BxTxS: jax.Array


def causal_access(slot, batch: int, num_tokens: int, num_slots: int) -> CacheAccess:
  """Rows that all start at slot 0: query t (at slot `slot + t`) reads slots 0 .. slot + t.
  `slot`: one integer, or one per row (rows of different lengths, each extended in place)."""
  slot = jnp.asarray(slot, jnp.int32)
  query_slots_BxT = jnp.broadcast_to(slot[..., None] + jnp.arange(num_tokens),
                                     (batch, num_tokens))
  mask_BxTxS = jnp.arange(num_slots)[None, None, :] <= query_slots_BxT[..., None]
  return CacheAccess(slot, mask_BxTxS)
