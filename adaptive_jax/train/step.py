"""Pure, jitted train and eval steps: (state, batch) -> (state, metrics)."""

import functools

import jax
import jax.numpy as jnp
import optax

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.train.config import RoutingConfig


def cross_entropy(logits_BxTxV, targets_BxT) -> jax.Array:
  """Per-token next-token cross-entropy (natural log), [B, T]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)


def training_routes(key, step, shape, routing_cfg: RoutingConfig) -> jax.Array:
  """Stage-1 routes for one step: random per token and layer; all-big before a big freeze."""
  route_BxTxL = routing.random_routes(jax.random.fold_in(key, step), shape,
                                      p_big=routing_cfg.p_big, p_skip=routing_cfg.p_skip)
  if routing_cfg.freeze_big_after >= 0:
    route_BxTxL = jnp.where(step < routing_cfg.freeze_big_after, int(routing.Route.BIG),
                            route_BxTxL)
  return route_BxTxL


def train_step(state, batch, *, model_cfg: ModelConfig, routing_cfg: RoutingConfig,
               route_key: jax.Array):
  """One AdamW step on mean cross-entropy under this step's random routes.

  A packed batch (`policy.data`) also carries `segment_ids` and `positions` for the model and
  `weights` (1 where a target counts): the mean is over the weighted targets.
  """
  tokens_BxT, targets_BxT = batch["inputs"], batch["targets"]
  weights_BxT = batch.get("weights")
  route_BxTxL = None
  if model_cfg.duo:
    shape = (*tokens_BxT.shape, model_cfg.num_layers)
    route_BxTxL = training_routes(route_key, state.step, shape, routing_cfg)

  def loss_fn(params):
    logits_BxTxV = state.apply_fn({"params": params}, tokens_BxT, route_BxTxL=route_BxTxL,
                                  positions_BxT=batch.get("positions"),
                                  segment_ids_BxT=batch.get("segment_ids"))
    losses_BxT = cross_entropy(logits_BxTxV, targets_BxT)
    if weights_BxT is None:
      return jnp.mean(losses_BxT)
    return jnp.sum(losses_BxT * weights_BxT) / jnp.maximum(jnp.sum(weights_BxT), 1.0)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  state = state.apply_gradients(grads=grads)
  metrics = {"train/loss": loss, "train/grad_norm": optax.tree.norm(grads)}
  if model_cfg.duo:
    metrics["train/big_fraction"] = jnp.mean(route_BxTxL == routing.Route.BIG)
  return state, metrics


def make_train_step(model_cfg, routing_cfg, route_key, state_shardings, batch_sharding):
  """The jitted step with explicit shardings; the old state's buffers are donated."""
  step = functools.partial(train_step, model_cfg=model_cfg, routing_cfg=routing_cfg,
                           route_key=route_key)
  return jax.jit(step, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=0)


@functools.partial(jax.jit, static_argnames="apply_fn")
def eval_loss_sum(params, batch, route_BxTxL, *, apply_fn):
  """Sum of per-token losses and the token count for one batch under given routes."""
  logits_BxTxV = apply_fn({"params": params}, batch["inputs"], route_BxTxL=route_BxTxL)
  losses_BxT = cross_entropy(logits_BxTxV, batch["targets"])
  return jnp.sum(losses_BxT), losses_BxT.size
