"""Per-layer linear routers that choose each token's route at each layer of a frozen Duo model.

Layer l's router reads h = ffn_norm(x), the RMS-normed state after layer l's attention: the
very input of the FFN it chooses for. Not the residual stream x: its scale grows with depth,
so one temperature would mean a different sharpness at every layer; after the norm the scale
is set by the (learned) norm weights alone. Its logits are over R options, (SMALL, BIG) or
(SKIP, SMALL, BIG) `with_skip`, in the order of `routing.route_options`, so BIG is last:

  logits_BxTxR = h_BxTxD @ kernel[l] + bias[l]     router params: kernel LxDxR, bias LxR

Attention is causal, so h at token t depends only on tokens <= t and their routes at the
layers below: a router sees the prefix alone and its routes are realizable at decode time.

Three walks through the model, layer by layer with `DecoderLayer`'s blocks:
  soft_routed     mixture weights softmax(logits / temperature) through the Duo-FFN's soft
                  path (router training, as in the paper)
  hard_routed     the top option (argmax); with `budget` (one, or one per position), exactly
                  that many BIG layers per token, still causal: BIG is forced once the layers
                  left equal the budget left and excluded once it is spent. L=4, budget 2,
                  argmaxes (B, S, B, B):
                    l=0: 2 left of 4 layers, argmax B -> B      l=1: 1 left of 3, S -> S
                    l=2: 1 left of 2, B -> B                     l=3: 0 left -> S (B excluded)
  teacher_forced  given routes (an oracle's) are taken and the routers' logits recorded on
                  the way: each router sees the states of the given path (imitation training)
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from adaptive_jax import routing
from adaptive_jax.nn import dispatch
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import DecoderLayer, Transformer
from adaptive_jax.routing import Route, route_options


class RouterOutput(NamedTuple):
  logits_BxTxV: jax.Array  # float32 next-token logits of the routed model
  router_logits_BxTxLxR: jax.Array  # float32, before the temperature
  weights_BxTxLxR: jax.Array  # the mixture applied: softmax (soft) or one-hot of the route
  # int32 route ids chosen (soft: each router's top option); with sparse dispatch, tokens that
  # overflowed a buffer ran SKIP instead, counted in overflow_R.
  route_BxTxL: jax.Array
  ffn_inputs_BxTxLxD: jax.Array  # what each router read (the normed FFN inputs)
  # Tokens sparse dispatch dropped to SKIP per requested route (SKIP, SMALL, BIG), summed over
  # layers: nonzero only with model.ffn_impl = "dispatch" and buffers short of the routes.
  overflow_R: jax.Array


def init_router(key: jax.Array, d_model: int, num_layers: int, *, with_skip: bool = False) -> dict:
  """Router params {'kernel': LxDxR, 'bias': LxR}: fan-in normal kernel (O(1) logits on the
  unit-RMS input, so routes start token-dependent), zero bias."""
  num_options = len(route_options(with_skip))
  kernel = jax.random.normal(key, (num_layers, d_model, num_options)) / jnp.sqrt(d_model)
  return {"kernel": kernel, "bias": jnp.zeros((num_layers, num_options))}


def options(router_params) -> tuple[Route, ...]:
  """The routes the routers choose between, in logit order (R = 3 means with skip)."""
  return route_options(router_params["kernel"].shape[-1] == routing.NUM_ROUTES)


def option_index(route_BxTxL: jax.Array, with_skip: bool) -> jax.Array:
  """Route ids -> index in `route_options(with_skip)` (without skip: SMALL 0, BIG 1)."""
  return route_BxTxL if with_skip else route_BxTxL - int(Route.SMALL)


def big_probability(weights_BxTxLxR: jax.Array) -> jax.Array:
  """The weight of BIG (the last option) per token and layer, [B, T, L]."""
  return weights_BxTxLxR[..., -1]


def layer_logits(kernel_DxR, bias_R, h_BxTxD) -> jax.Array:
  """One layer's router logits, float32 [B, T, R]."""
  return jnp.einsum("btd,dr->btr", h_BxTxD.astype(jnp.float32), kernel_DxR) + bias_R


def all_layer_logits(router_params, h_BxTxLxD) -> jax.Array:
  """Every layer's router logits on given FFN inputs (e.g. `ffn_inputs_BxTxLxD`), [B, T, L, R]."""
  return jax.vmap(layer_logits, in_axes=(0, 0, 2), out_axes=2)(
      router_params["kernel"], router_params["bias"], h_BxTxLxD)


def _check(cfg: ModelConfig, router_params, tokens_BxT):
  if not cfg.duo:
    raise ValueError("routers need a Duo model (model.duo=True)")
  shape = getattr(tokens_BxT, "shape", None)
  if shape is None or len(shape) != 2:
    raise ValueError(f"tokens_BxT must have shape [batch, tokens], got shape {shape}")
  want = (cfg.num_layers, cfg.d_model)
  kernel_shape = tuple(router_params["kernel"].shape)
  if kernel_shape[:2] != want or kernel_shape[2] not in (2, routing.NUM_ROUTES):
    raise ValueError(f"router kernel must have shape [num_layers, d_model, R] = [{want[0]}, "
                     f"{want[1]}, 2 or 3], got {kernel_shape}")


def _walk(params, router_params, cfg: ModelConfig, tokens_BxT, choose, carry, per_layer):
  """Runs the layers in a scan; `choose(logits_BxTxR, carry, per_layer[l])` returns
  (route_in for `ffn_block`, weights_BxTxR, route_BxT, carry)."""
  _check(cfg, router_params, tokens_BxT)
  layer = DecoderLayer(cfg)
  positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
  x_BxTxD = Transformer(cfg).apply({"params": params}, tokens_BxT,
                                   method=Transformer.embed_tokens)

  def body(state, xs):
    x_BxTxD, carry = state
    lp, kernel_DxR, bias_R, extra = xs
    x_BxTxD = layer.apply({"params": lp}, x_BxTxD, positions_BxT,
                          method=DecoderLayer.attention_block)
    # The router reads exactly the FFN's input.
    h_BxTxD = layer.apply({"params": lp}, x_BxTxD, method=DecoderLayer.ffn_input)
    logits_BxTxR = layer_logits(kernel_DxR, bias_R, h_BxTxD)
    route_in, weights_BxTxR, route_BxT, carry = choose(logits_BxTxR, carry, extra)
    x_BxTxD, sown = layer.apply({"params": lp}, x_BxTxD, route_in,
                                method=DecoderLayer.ffn_block, mutable=["intermediates"])
    overflow_R = dispatch.overflow(sown)
    return (x_BxTxD, carry), (logits_BxTxR, weights_BxTxR, route_BxT, h_BxTxD, overflow_R)

  xs = (params["layers"], router_params["kernel"], router_params["bias"], per_layer)
  (x_BxTxD, _), (logits, weights, route, h, overflow) = jax.lax.scan(body, (x_BxTxD, carry), xs)
  layers_last = lambda a_LxBxT: jnp.moveaxis(a_LxBxT, 0, 2)
  return RouterOutput(
      logits_BxTxV=Transformer(cfg).apply({"params": params}, x_BxTxD,
                                          method=Transformer.logits),
      router_logits_BxTxLxR=layers_last(logits), weights_BxTxLxR=layers_last(weights),
      route_BxTxL=layers_last(route).astype(jnp.int32), ffn_inputs_BxTxLxD=layers_last(h),
      overflow_R=overflow.sum(0))


def _all_routes(weights_BxTxR, options_R):
  """Weights over the router's options -> weights over (SKIP, SMALL, BIG)."""
  return jnp.zeros(weights_BxTxR.shape[:-1] + (routing.NUM_ROUTES,), weights_BxTxR.dtype).at[
      ..., jnp.array([int(r) for r in options_R])].set(weights_BxTxR)


def soft_routed(params, router_params, cfg: ModelConfig, tokens_BxT, *,
                temperature) -> RouterOutput:
  """Each layer's FFN output is the softmax(logits / temperature) mixture of its routes."""
  options_R = options(router_params)
  ids_R = jnp.array([int(r) for r in options_R], jnp.int32)

  def choose(logits_BxTxR, carry, _):
    weights_BxTxR = jax.nn.softmax(logits_BxTxR / temperature, axis=-1)
    route_in = {"weights": _all_routes(weights_BxTxR, options_R)}
    return route_in, weights_BxTxR, ids_R[jnp.argmax(logits_BxTxR, -1)], carry

  return _walk(params, router_params, cfg, tokens_BxT, choose, None,
               jnp.zeros(cfg.num_layers))


def hard_routed(params, router_params, cfg: ModelConfig, tokens_BxT, *,
                budget=None) -> RouterOutput:
  """Each token takes its router's top route; with `budget`, exactly that many BIG layers:
  one integer for every token, or one per position (a schedule, length T)."""
  options_R = options(router_params)
  ids_R = jnp.array([int(r) for r in options_R], jnp.int32)
  num_layers = cfg.num_layers
  if budget is not None and not isinstance(budget, jax.core.Tracer):
    if isinstance(budget, (tuple, list)) or getattr(budget, "ndim", 0):
      budget = tuple(budget)
      if len(budget) != tokens_BxT.shape[1]:
        raise ValueError(f"a budget schedule needs one budget per position ({tokens_BxT.shape[1]}),"
                         f" got {len(budget)}")
      budget = jnp.array([routing.validate_budget(k, num_layers=num_layers,
                                                  name="budget schedule entry") for k in budget])
    else:
      budget = routing.validate_budget(budget, num_layers=num_layers)
  is_big_R = ids_R == int(Route.BIG)

  def choose(logits_BxTxR, left_BxT, layer):
    if budget is not None:
      forced_BxT = left_BxT >= num_layers - layer  # the remaining layers must all be BIG
      spent_BxT = left_BxT <= 0
      allowed_BxTxR = jnp.where(forced_BxT[..., None], is_big_R,
                                jnp.where(spent_BxT[..., None], ~is_big_R, True))
      logits_BxTxR = jnp.where(allowed_BxTxR, logits_BxTxR, -jnp.inf)
    choice_BxT = jnp.argmax(logits_BxTxR, -1)
    route_BxT = ids_R[choice_BxT]
    left_BxT = left_BxT - (route_BxT == int(Route.BIG))
    weights_BxTxR = jax.nn.one_hot(choice_BxT, len(options_R))
    return {"route": route_BxT}, weights_BxTxR, route_BxT, left_BxT

  left_BxT = jnp.broadcast_to(jnp.asarray(num_layers if budget is None else budget, jnp.int32),
                              tokens_BxT.shape)
  return _walk(params, router_params, cfg, tokens_BxT, choose, left_BxT,
               jnp.arange(num_layers))


def teacher_forced(params, router_params, cfg: ModelConfig, tokens_BxT,
                   route_BxTxL) -> RouterOutput:
  """The model under the given routes; the routers' logits are read on the way."""
  routing.validate_routes(route_BxTxL, num_layers=cfg.num_layers)
  options_R = options(router_params)
  with_skip = len(options_R) == routing.NUM_ROUTES
  if not with_skip and not isinstance(route_BxTxL, jax.core.Tracer) and jnp.any(
      route_BxTxL == int(Route.SKIP)):
    raise ValueError("route_BxTxL takes SKIP but the routers choose only SMALL or BIG")

  def choose(logits_BxTxR, carry, route_BxT):
    weights_BxTxR = jax.nn.one_hot(option_index(route_BxT, with_skip), len(options_R))
    return {"route": route_BxT}, weights_BxTxR, route_BxT, carry

  return _walk(params, router_params, cfg, tokens_BxT, choose, None,
               jnp.moveaxis(route_BxTxL, -1, 0))
