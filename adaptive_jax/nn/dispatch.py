"""Sparse dispatch for one Duo-FFN layer: each FFN runs only on the tokens routed to it.

The masked dense path (`duo_ffn.DuoFFN`) runs both FFNs on every token and selects. Here the
tokens are grouped by route into buffers of a STATIC number of rows per route (the capacity,
as MaxText's `MoeBlock` sizes expert buffers), each FFN runs on its own buffer, and the rows
are gathered back to their tokens. Compute scales with the capacities, not with N x both FFNs.
The FFNs use the DuoFFN's own params (`{"small": ..., "big": ...}`) through the same
`SwiGLU.weights` and `swiglu`, so one set of params drives both paths.

Worked example, N=6 tokens, capacity_small=2, capacity_big=2 (`plan_dispatch` computes the
lines down to token_of_row, `dispatch_ffn` the last two):

  route        = [BIG, SMALL, BIG, SKIP, BIG, SMALL]
  position     = [ 0,    0,    1,   -,    2,    1 ]   (cumsum of the route's one-hot, minus 1)
  kept         = [ y,    y,    y,   -,    n,    y ]   (token 4: position 2 >= capacity_big)
  realized     = [BIG, SMALL, BIG, SKIP, SKIP, SMALL],  overflow_R = [0, 0, 1]  (SKIP, SMALL, BIG)
  buffer rows  = small slots 0..1, then big slots 2..3, then one zero row 4
  row_N        = [ 2,    0,    3,   4,    4,    1 ]   (small: pos; big: Cs + pos; else the zero row)
  token_of_row = [ 1, 5 | 0, 2 ]                     (scatter of token ids by row_N)
  x_rows       = x[token_of_row]  -> small FFN on rows 0..1, big FFN on rows 2..3
  y            = concat(small_out, big_out, 0)[row_N] = [b0, s1, b2, 0, 0, s5]

With capacity_small=6 (>= N: SMALL is dense), the buffer holds big slots 0..1 only, tokens 1
and 5 point at the zero row, and the small FFN runs on all six tokens in place: y takes its
output where the realized route is SMALL.

Overflow policy: a token past its route's capacity is dropped to SKIP (zero FFN output, the
residual carries it, as in Switch Transformer); never silently: the realized routes and the
number of dropped tokens per requested route are returned. Within a route, earlier tokens in
flattened order (batch-major, then time) get slots first, so drops hit the last rows of a
batch. SKIP never overflows.

Sharding: with `groups` = G > 1 the tokens are split into G blocks along the leading axis, each
dispatched on its own (vmapped), with the capacities per group and the overflow counts summed.
On a mesh, G = the number of 'data' shards and the group axis carries the logical name 'batch',
so every shard groups and computes its own tokens with no communication but sums (checked on
8 fake devices). A vmap rather than `jax.shard_map`: inside shard_map 'data' is a manual axis,
and swiglu's logical constraint ('batch' -> 'data') would be an error there.

SKIP matches the masked path exactly: its output is exact zeros of the FFN output dtype.

A route whose capacity covers every token (fraction 1, or all-small / all-big routing) is run
densely, the FFN on all tokens in place and a select, as the masked path does: a buffer of
every token would only permute them, and the gather and scatter are the fixed cost that keeps
sparse dispatch above its FLOP share. So at budget 0 (all SMALL, capacity_big 0) nothing is
gathered and the big FFN never runs.

In the model: `model.ffn_impl = "dispatch"` makes every Duo-FFN under hard routes take this
path (router evaluation, oracle-route evaluation, decoding with routes).
"""

import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.ffn import SwiGLU, swiglu, swiglu_if_used
from adaptive_jax.routing import Route
from adaptive_jax.typed_config import is_integer, is_number

OVERFLOW = "dispatch_overflow_R"  # the name DuoFFN sows each layer's overflow under


def overflow(intermediates) -> jax.Array:
  """Tokens dropped to SKIP per requested route (SKIP, SMALL, BIG), summed over every layer and
  call, from the "intermediates" a model call returned with mutable=["intermediates"]."""
  found = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(intermediates)
           if OVERFLOW in jax.tree_util.keystr(path)]
  total = jnp.zeros(routing.NUM_ROUTES, jnp.int32)
  for leaf in found:
    total = total + jnp.reshape(leaf, (-1, routing.NUM_ROUTES)).sum(0)
  return total


def capacity(num_tokens: int, fraction: float, capacity_factor: float = 1.0, *,
             multiple: int = 8) -> int:
  """Rows of one route's buffer: ceil(num_tokens * fraction * capacity_factor), padded to a
  multiple of `multiple` (whole vector tiles), never more than num_tokens.

  `fraction` is the route's expected share of tokens (p_big for BIG under random routing);
  a factor above 1 leaves room for the binomial spread. E.g. capacity(2048, 0.25, 1.25) = 640,
  capacity(10, 0.5) = 8, capacity(10, 0.9) = 10 (16 capped at the 10 tokens there are).
  """
  for name, value in (("num_tokens", num_tokens), ("multiple", multiple)):
    if not is_integer(value) or value <= 0:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  fraction = routing.validate_probability(fraction, name="fraction")
  if not is_number(capacity_factor) or capacity_factor < 0:
    raise ValueError(f"capacity_factor must be a number >= 0, got {capacity_factor!r}")
  rows = math.ceil(num_tokens * fraction * capacity_factor)
  return int(min(-(-rows // multiple) * multiple, num_tokens))


def _validate_capacity(value, name: str) -> int:
  if not is_integer(value) or value < 0:
    raise ValueError(f"{name} must be an integer >= 0 (a static number of buffer rows), "
                     f"got {value!r} of type {type(value).__name__}")
  return int(value)


class DispatchPlan(NamedTuple):
  """Where each token goes. C = buffer rows of the buffered routes (small slots first; a dense
  route, see `dense_routes`, has none)."""
  row_N: jax.Array  # the token's buffer row; C (the zero row) for SKIP, dropped and dense tokens
  token_of_row_C: jax.Array  # the token in each buffer row; N where the row is empty
  realized_route_N: jax.Array  # the route taken: the requested one, or SKIP after overflow
  overflow_R: jax.Array  # tokens dropped to SKIP, per requested route (SKIP, SMALL, BIG)


def plan_dispatch(route_N, *, capacity_small: int, capacity_big: int) -> DispatchPlan:
  """Groups flat tokens by route into static-capacity slots, first come first served.

  A route whose capacity is at least N (every token could take it) is run densely instead
  (`dense_routes`): its tokens keep it, get no buffer row and point at the zero row."""
  cs = _validate_capacity(capacity_small, "capacity_small")
  cb = _validate_capacity(capacity_big, "capacity_big")
  n = route_N.shape[0]
  dense_small, dense_big = dense_routes(n, cs, cb)
  cs, cb = (0 if dense_small else cs), (0 if dense_big else cb)
  is_small_N, is_big_N = route_N == Route.SMALL, route_N == Route.BIG
  # Position of each token among the earlier tokens of its route: a cumsum, no sort or loop.
  pos_small_N = jnp.cumsum(is_small_N, dtype=jnp.int32) - 1
  pos_big_N = jnp.cumsum(is_big_N, dtype=jnp.int32) - 1
  kept_small_N = is_small_N & (dense_small | (pos_small_N < cs))
  kept_big_N = is_big_N & (dense_big | (pos_big_N < cb))
  buffered_small_N = kept_small_N & (not dense_small)
  buffered_big_N = kept_big_N & (not dense_big)
  row_N = jnp.where(buffered_small_N, pos_small_N,
                    jnp.where(buffered_big_N, cs + pos_big_N, cs + cb))
  # Buffered tokens have distinct rows < C; the rest point at row C, which mode="drop" discards.
  token_of_row_C = jnp.full((cs + cb,), n, jnp.int32).at[row_N].set(
      jnp.arange(n, dtype=jnp.int32), mode="drop")
  realized_N = jnp.where(kept_small_N | kept_big_N, route_N, Route.SKIP).astype(route_N.dtype)
  overflow_R = jnp.stack([jnp.zeros((), jnp.int32),
                          jnp.sum(is_small_N & ~kept_small_N, dtype=jnp.int32),
                          jnp.sum(is_big_N & ~kept_big_N, dtype=jnp.int32)])
  return DispatchPlan(row_N, token_of_row_C, realized_N, overflow_R)


def dense_routes(num_tokens: int, capacity_small: int, capacity_big: int) -> tuple[bool, bool]:
  """Whether SMALL and BIG run densely: a buffer of every token would only permute them, so
  the FFN runs on all tokens in place and the select keeps its own (no gather, no scatter)."""
  return capacity_small >= num_tokens, capacity_big >= num_tokens


def dispatch_ffn(params, x_BxTxD, route_BxT, *, cfg: ModelConfig, capacity_small: int,
                 capacity_big: int, groups: int = 1):
  """One Duo-FFN layer by sparse dispatch: (y like x, realized routes like route, overflow_R).

  `params` are one DuoFFN's params, `{"small": {...}, "big": {...}}` (boxed or not).
  `x_BxTxD` may have any leading shape ([N, D] or [B, T, D]); `route_BxT` is that shape without
  D. `overflow_R[r]` is the number of tokens that asked for route r and were dropped to SKIP
  (r = SKIP, SMALL, BIG; the SKIP entry is always 0), summed over groups. Capacities are static
  Python ints: rows per route in each group. Jittable with capacities and `groups` static.

  `groups` splits the leading axis into that many equal blocks, each dispatched on its own
  (vmapped). On a mesh, pass groups = the number of 'data' shards: the group axis carries the
  logical name 'batch', so each shard groups and computes its own tokens, with no communication
  but the sum of the overflow counts.
  """
  capacity_small = _validate_capacity(capacity_small, "capacity_small")
  capacity_big = _validate_capacity(capacity_big, "capacity_big")
  if x_BxTxD.ndim < 2 or x_BxTxD.shape[-1] != cfg.d_model:
    raise ValueError(f"x_BxTxD must have shape [..., d_model={cfg.d_model}], "
                     f"got {x_BxTxD.shape}")
  if route_BxT.shape != x_BxTxD.shape[:-1]:
    raise ValueError(f"route_BxT must have x's shape without d_model, {x_BxTxD.shape[:-1]}, "
                     f"got {route_BxT.shape}")
  if not is_integer(groups) or groups <= 0 or x_BxTxD.shape[0] % groups:
    raise ValueError(f"groups must be a positive integer that divides x_BxTxD's leading axis "
                     f"({x_BxTxD.shape[0]}), got {groups!r}")
  # Checks the dtype, and the values when they are concrete (not under jit).
  routing.validate_routes(jnp.reshape(route_BxT, (1, -1, 1)), num_layers=1, name="route_BxT")
  params = nn.meta.unbox(params)
  small_w = SwiGLU(cfg, cfg.d_ff_small).apply({"params": params["small"]}, method="weights")
  big_w = SwiGLU(cfg, cfg.d_ff_big).apply({"params": params["big"]}, method="weights")
  return dispatch_with_weights(x_BxTxD, route_BxT, small_w, big_w,
                               capacity_small=capacity_small, capacity_big=capacity_big,
                               groups=groups)


def dispatch_with_weights(x_BxTxD, route_BxT, small_w, big_w, *, capacity_small: int,
                          capacity_big: int, groups: int = 1):
  """`dispatch_ffn` on the two FFNs' (gate, up, down) weights; inputs checked by the caller."""
  d = x_BxTxD.shape[-1]
  # G groups of N tokens each; "length" for N and C keeps them whole within a shard.
  x_GxNxD = nn.with_logical_constraint(x_BxTxD.reshape(groups, -1, d),
                                       ("batch", "length", "embed"))
  route_GxN = nn.with_logical_constraint(route_BxT.reshape(groups, -1), ("batch", "length"))
  n = x_GxNxD.shape[1]
  dense_small, dense_big = dense_routes(n, capacity_small, capacity_big)
  cs = 0 if dense_small else capacity_small
  cb = 0 if dense_big else capacity_big
  plan = jax.vmap(functools.partial(plan_dispatch, capacity_small=capacity_small,
                                    capacity_big=capacity_big))(route_GxN)
  y_dtype = x_GxNxD.dtype
  y_GxNxD = jnp.zeros_like(x_GxNxD)
  if cs + cb:
    # Empty rows hold token id N, which gathers zeros; their outputs are never gathered back.
    x_GxCxD = jax.vmap(lambda x_NxD, token_C: x_NxD.at[token_C].get(mode="fill", fill_value=0))(
        x_GxNxD, plan.token_of_row_C)
    parts = []
    if cs:
      parts.append(swiglu(x_GxCxD[:, :cs], *small_w))
    if cb:
      parts.append(swiglu(x_GxCxD[:, cs:], *big_w))
    y_dtype = jnp.result_type(*parts)
    # SKIP, dropped and dense tokens read the appended zero row: exact zeros.
    y_GxCxD = jnp.concatenate([p.astype(y_dtype) for p in parts]
                              + [jnp.zeros((groups, 1, d), y_dtype)], axis=1)
    y_GxNxD = jax.vmap(lambda y_CxD, row_N: y_CxD[row_N])(y_GxCxD, plan.row_N)
  for dense, route, weights in ((dense_small, Route.SMALL, small_w), (dense_big, Route.BIG, big_w)):
    if dense:  # in place on every token, skipped (lax.cond) when no token takes the route
      taken_GxN = plan.realized_route_N == route
      out_GxNxD = swiglu_if_used(jnp.any(taken_GxN), x_GxNxD, weights)
      y_dtype = jnp.result_type(y_dtype, out_GxNxD)
      y_GxNxD = jnp.where(taken_GxN[..., None], out_GxNxD.astype(y_dtype),
                          y_GxNxD.astype(y_dtype))
  y_GxNxD = nn.with_logical_constraint(y_GxNxD, ("batch", "length", "embed"))
  return (y_GxNxD.reshape(x_BxTxD.shape[:-1] + (d,)),
          plan.realized_route_N.reshape(route_BxT.shape), plan.overflow_R.sum(0))
