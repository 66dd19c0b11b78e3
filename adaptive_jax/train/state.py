"""Optimizer and sharded train state built from jax.eval_shape + jit(out_shardings)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util
from flax.training import train_state

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.train import mesh as mesh_lib
from adaptive_jax.train.config import RoutingConfig, TrainConfig


class TrainState(train_state.TrainState):
  """step, params, opt_state (apply_fn and tx are static)."""


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
  """Linear warmup to the peak, cosine decay to 10% of it at `lr_decay_steps`, then constant.

  The horizon is its own field, not num_steps, so a run stopped early and resumed with a
  larger num_steps follows the same schedule as an uninterrupted run.
  """
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
      decay_steps=cfg.lr_decay_steps, end_value=0.1 * cfg.learning_rate)


def _param_labels(params):
  """'big' for the big FFN's weights, 'rest' for everything else."""
  unboxed = nn.meta.unbox(params)
  return traverse_util.path_aware_map(lambda path, _: "big" if "big" in path else "rest", unboxed)


def make_optimizer(train: TrainConfig, routing_cfg: RoutingConfig) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW (decay on matrices only); optionally freezes the big FFNs.

  The clip sees every gradient, the big FFNs' too, also with the freeze: clipping inside each
  branch would scale the rest by its own norm and change more than the freeze.
  """
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 2, nn.meta.unbox(params))
  adamw = lambda: optax.adamw(learning_rate_schedule(train), b2=train.b2,
                              weight_decay=train.weight_decay, mask=decay_mask)
  clip = optax.clip_by_global_norm(train.grad_clip)
  if routing_cfg.freeze_big_after < 0:
    return optax.chain(clip, adamw())
  # After `freeze_big_after` updates, the big FFNs' updates are scaled by 0: frozen exactly.
  freeze = optax.scale_by_schedule(
      lambda count: (count < routing_cfg.freeze_big_after).astype(jnp.float32))
  return optax.chain(clip, optax.multi_transform(
      {"big": optax.chain(adamw(), freeze), "rest": adamw()}, _param_labels))


def _strip_boxes(tree):
  """Drops the logical-axis boxes without applying their sharding constraints (abstract
  values carry no sharding, and a caller may have axis rules active)."""
  is_box = lambda x: isinstance(x, nn.Partitioned)
  return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree,
                      is_leaf=is_box)


def sharded_state_init(model_cfg: ModelConfig, train: TrainConfig, routing_cfg: RoutingConfig,
                       mesh, seq_len: int):
  """Returns (init_fn, abstract_state): init_fn() builds the state directly in its shardings;
  abstract_state holds ShapeDtypeStructs with those shardings (the checkpoint restore target).
  """
  model = Transformer(model_cfg)
  tx = make_optimizer(train, routing_cfg)
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  routes = jnp.zeros((1, seq_len, model_cfg.num_layers), jnp.int32) if model_cfg.duo else None

  def init_boxed(key):
    variables = model.init(key, tokens, route_BxTxL=routes)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx)

  key = jax.random.key(train.seed)
  with jax.set_mesh(mesh), nn.logical_axis_rules(train.logical_axis_rules):
    boxed = jax.eval_shape(init_boxed, key)
    shardings = mesh_lib.logical_shardings(boxed, mesh, train.logical_axis_rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          _strip_boxes(boxed), shardings)
  init_jit = jax.jit(lambda k: nn.meta.unbox(init_boxed(k)), out_shardings=shardings)

  def init_fn():
    with jax.set_mesh(mesh), nn.logical_axis_rules(train.logical_axis_rules):
      return init_jit(key)

  return init_fn, abstract


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(nn.meta.unbox(params)))
