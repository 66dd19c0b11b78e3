"""Routes through a Duo transformer: which FFN module each token uses at each layer.

A route is one of SKIP=0 (residual only), SMALL=1, BIG=2, stored per token per layer as an
int array `route_BxTxL`. The *budget* of a token is the number of layers where it takes BIG.

Imports only jax, numpy and adaptive_jax.typed_config.
"""

import dataclasses
import enum

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.typed_config import is_integer, is_number

ROUTE_DTYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8)


class Route(enum.IntEnum):
  SKIP = 0
  SMALL = 1
  BIG = 2


NUM_ROUTES = len(Route)


def validate_routes(route_BxTxL, *, num_layers: int, name: str = "route_BxTxL") -> None:
  """Raises ValueError naming `name` unless it is an integer [B, T, num_layers] array of route ids.

  Checks shape and dtype always; checks values when the array is concrete (not a tracer).
  """
  shape = getattr(route_BxTxL, "shape", None)
  dtype = getattr(route_BxTxL, "dtype", None)
  if shape is None or len(shape) != 3 or shape[-1] != num_layers:
    raise ValueError(
        f"{name} must have shape [batch, tokens, num_layers={num_layers}], got shape {shape}")
  if not any(np.dtype(dtype) == np.dtype(d) for d in ROUTE_DTYPES):
    raise ValueError(
        f"{name} must have an integer dtype (one of {[np.dtype(d).name for d in ROUTE_DTYPES]}), "
        f"got {np.dtype(dtype).name}")
  if isinstance(route_BxTxL, jax.core.Tracer):
    return
  values = np.asarray(route_BxTxL)
  bad = (values < 0) | (values >= NUM_ROUTES)
  if bad.any():
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f"{name} values must be in {{SKIP=0, SMALL=1, BIG=2}}, got {values[first]} at index {first}")


def validate_soft_routes(weights_BxTxLxR, *, num_layers: int,
                         name: str = "weights_BxTxLxR") -> None:
  """Raises ValueError unless weights are a float [B, T, num_layers, 3] array (SKIP, SMALL, BIG)."""
  shape = getattr(weights_BxTxLxR, "shape", None)
  if shape is None or len(shape) != 4 or shape[2:] != (num_layers, NUM_ROUTES):
    raise ValueError(f"{name} must have shape [batch, tokens, num_layers={num_layers}, "
                     f"{NUM_ROUTES} (SKIP, SMALL, BIG)], got shape {shape}")
  if not jnp.issubdtype(weights_BxTxLxR.dtype, jnp.floating):
    raise ValueError(f"{name} must have a floating dtype, got {weights_BxTxLxR.dtype}")


def route_options(with_skip: bool) -> tuple[Route, ...]:
  """The routes a layer may take, in digit order of the oracle's pattern numbering (BIG last)."""
  return (Route.SKIP, Route.SMALL, Route.BIG) if with_skip else (Route.SMALL, Route.BIG)


def validate_budget(budget, *, num_layers: int, name: str = "budget") -> int:
  """Returns `budget` as an int; raises ValueError unless it is an integer in [0, num_layers]."""
  if not is_integer(budget):
    raise ValueError(f"{name} must be an integer number of big layers in [0, {num_layers}], "
                     f"got {budget!r} of type {type(budget).__name__}")
  if not 0 <= budget <= num_layers:
    raise ValueError(f"{name} must be in [0, {num_layers}] (number of big layers), got {budget}")
  return int(budget)


def validate_probability(p, *, name: str) -> float:
  """Returns `p` as a float; raises ValueError unless 0 <= p <= 1."""
  if not is_number(p):
    raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
  if not 0.0 <= float(p) <= 1.0:
    raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
  return float(p)


def num_big(route_BxTxL: jax.Array) -> jax.Array:
  """Budget used per token: the number of BIG layers on its path, [B, T]."""
  return jnp.sum(route_BxTxL == Route.BIG, axis=-1)


def random_routes(key: jax.Array, shape: tuple[int, int, int], *, p_big: float,
                  p_skip: float = 0.0) -> jax.Array:
  """Independent routes per token and layer: BIG w.p. p_big, SKIP w.p. p_skip, else SMALL.

  Returns int32 `route_BxTxL` of `shape` = (B, T, L).
  """
  p_big = validate_probability(p_big, name="p_big")
  p_skip = validate_probability(p_skip, name="p_skip")
  if p_big + p_skip > 1.0 + 1e-9:
    raise ValueError(f"p_big + p_skip must be <= 1, got p_big={p_big}, p_skip={p_skip}")
  u = jax.random.uniform(key, shape)
  route = jnp.where(u < p_big, Route.BIG, Route.SMALL)
  route = jnp.where((u >= p_big) & (u < p_big + p_skip), Route.SKIP, route)
  return route.astype(jnp.int32)


def constant_routes(shape: tuple[int, int, int], route: Route) -> jax.Array:
  """Every token at every layer takes `route` (all-small, all-big, all-skip baselines)."""
  return jnp.full(shape, int(route), jnp.int32)


@dataclasses.dataclass(frozen=True)
class FlopModel:
  """Forward FLOPs per token of one layer, counting a multiply-add as 2 FLOPs: the one FLOP
  model (nn/flops.py counts dense models with it).

  SwiGLU of inner width F on width D: three D x F matmuls = 6 * D * F.
  Attention with query width Nq = N * H (N heads of width H) and key/value width Nk = K * H
  (K kv heads; K < N is grouped-query): q and out projections 2 * 2 * D * Nq, k and v
  2 * 2 * D * Nk, scores and values over T_ctx keys 2 * 2 * T_ctx * Nq. Multi-head attention
  with N * H = D (the defaults) gives 8 * D^2 + 4 * T_ctx * D. Example: D = 32, N = 3, K = 1,
  H = 8, T_ctx = 10: 4 * 32 * (24 + 8) + 4 * 10 * 24 = 4096 + 960.
  """
  d_model: int
  d_ff_small: int
  d_ff_big: int
  context: float  # average number of keys each query attends to (about T / 2 for causal)
  q_width: int | None = None  # N * H; None: d_model
  kv_width: int | None = None  # K * H; None: q_width (multi-head attention)

  @classmethod
  def from_config(cls, cfg, context: float) -> "FlopModel":
    """The FLOP model of a model config (nn.config.ModelConfig) with `context` keys per query."""
    return cls(cfg.d_model, cfg.d_ff_small, cfg.d_ff_big, context,
               q_width=cfg.num_heads * cfg.head_dim, kv_width=cfg.kv_heads * cfg.head_dim)

  def ffn(self, route: Route) -> float:
    width = {Route.SKIP: 0, Route.SMALL: self.d_ff_small, Route.BIG: self.d_ff_big}[Route(route)]
    return 6.0 * self.d_model * width

  def attention(self) -> float:
    q = self.d_model if self.q_width is None else self.q_width
    kv = q if self.kv_width is None else self.kv_width
    return 4.0 * self.d_model * (q + kv) + 4.0 * self.context * q

  def route_flops(self, route_BxTxL) -> np.ndarray:
    """Forward FLOPs of each token's path through the layers (attention + routed FFNs), [B, T]."""
    route = np.asarray(route_BxTxL)
    per_route = np.array([self.ffn(r) for r in Route])
    return per_route[route].sum(-1) + route.shape[-1] * self.attention()

  def masked_dense_flops(self, num_layers: int) -> float:
    """Forward FLOPs per token when both FFNs are computed for every token (masked dense)."""
    return num_layers * (self.attention() + self.ffn(Route.SMALL) + self.ffn(Route.BIG))
