"""Learned routers on a tiny random Duo model: the routed walks against Transformer.apply,
the losses against hand values, and short trainings that must move toward their targets."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax import routing
from adaptive_jax.nn import router as router_lib
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.router import train as router_train
from configs import duo_small, router_small

CFG = ModelConfig(vocab_size=50, num_layers=3, d_model=16, num_heads=2, head_dim=8, d_ff_big=32,
                  d_ff_small=4, max_len=16)
B, T, L = 2, 6, CFG.num_layers


def _init(cfg):
  tokens_BxT = jnp.zeros((B, T), jnp.int32)
  params = nn.meta.unbox(Transformer(cfg).init(
      jax.random.key(0), tokens_BxT, route_BxTxL=jnp.ones((B, T, L), jnp.int32)))["params"]
  # Random (not 1.0) norm scales, so reading the wrong (un)normed state cannot hide.
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x * (1 + 0.3 * jax.random.normal(jax.random.key(len(path)), x.shape))
      if "scale" in jax.tree_util.keystr(path) else x, params)


@pytest.fixture(scope="module")
def params():
  return _init(CFG)


def _tokens(seed, shape=(B, T)):
  return jax.random.randint(jax.random.key(seed), shape, 0, CFG.vocab_size)


def _routers(with_skip, seed=3):
  return router_lib.init_router(jax.random.key(seed), CFG.d_model, L, with_skip=with_skip)


@pytest.mark.parametrize("with_skip", [False, True])
def test_hard_routing_equals_transformer_with_the_same_routes(params, with_skip):
  tokens_BxT = _tokens(1)
  out = router_lib.hard_routed(params, _routers(with_skip), CFG, tokens_BxT)
  used = set(np.unique(np.asarray(out.route_BxTxL)).tolist())
  assert used == ({0, 1, 2} if with_skip else {1, 2})  # the routes are token-dependent
  expected = Transformer(CFG).apply({"params": params}, tokens_BxT, route_BxTxL=out.route_BxTxL)
  np.testing.assert_allclose(np.asarray(out.logits_BxTxV), np.asarray(expected), atol=1e-5)
  # The route is the top option of logits computed on the normed FFN input.
  options_R = np.array([int(r) for r in router_lib.options(_routers(with_skip))])
  np.testing.assert_array_equal(options_R[np.argmax(out.router_logits_BxTxLxR, -1)],
                                out.route_BxTxL)


@pytest.mark.parametrize("with_skip", [False, True])
def test_soft_routing_at_near_zero_temperature_equals_hard_routing(params, with_skip):
  tokens_BxT = _tokens(2)
  hard = router_lib.hard_routed(params, _routers(with_skip), CFG, tokens_BxT)
  soft = router_lib.soft_routed(params, _routers(with_skip), CFG, tokens_BxT, temperature=1e-6)
  np.testing.assert_array_equal(soft.route_BxTxL, hard.route_BxTxL)
  np.testing.assert_allclose(np.asarray(soft.logits_BxTxV), np.asarray(hard.logits_BxTxV),
                             atol=1e-4)
  warm = router_lib.soft_routed(params, _routers(with_skip), CFG, tokens_BxT, temperature=1.0)
  assert np.abs(np.asarray(warm.logits_BxTxV) - np.asarray(hard.logits_BxTxV)).max() > 1e-3


def test_routes_are_causal(params):
  tokens_BxT = _tokens(4)
  changed_BxT = tokens_BxT.at[:, 3].set((tokens_BxT[:, 3] + 1) % CFG.vocab_size)
  a, b = (router_lib.hard_routed(params, _routers(False), CFG, t) for t in (tokens_BxT,
                                                                              changed_BxT))
  np.testing.assert_array_equal(a.route_BxTxL[:, :3], b.route_BxTxL[:, :3])
  np.testing.assert_allclose(a.logits_BxTxV[:, :3], b.logits_BxTxV[:, :3], atol=1e-6)


@pytest.mark.parametrize("budget", [0, 1, 2, 3])
def test_budget_exact_hard_routing_takes_exactly_k_big_layers(params, budget):
  out = router_lib.hard_routed(params, _routers(True), CFG, _tokens(5), budget=budget)
  np.testing.assert_array_equal(routing.num_big(out.route_BxTxL), budget)
  expected = Transformer(CFG).apply({"params": params}, _tokens(5), route_BxTxL=out.route_BxTxL)
  np.testing.assert_allclose(np.asarray(out.logits_BxTxV), np.asarray(expected), atol=1e-5)


def test_budget_schedule_takes_each_positions_budget_exactly(params):
  budget_T = (3, 3, 0, 1, 2, 2)
  out = router_lib.hard_routed(params, _routers(True), CFG, _tokens(5), budget=budget_T)
  np.testing.assert_array_equal(routing.num_big(out.route_BxTxL), np.broadcast_to(budget_T, (B, T)))
  expected = Transformer(CFG).apply({"params": params}, _tokens(5), route_BxTxL=out.route_BxTxL)
  np.testing.assert_allclose(np.asarray(out.logits_BxTxV), np.asarray(expected), atol=1e-5)
  # A constant schedule is the constant budget.
  same = router_lib.hard_routed(params, _routers(True), CFG, _tokens(5), budget=(2,) * T)
  np.testing.assert_array_equal(same.route_BxTxL, router_lib.hard_routed(
      params, _routers(True), CFG, _tokens(5), budget=2).route_BxTxL)
  with pytest.raises(ValueError, match="one budget per position"):
    router_lib.hard_routed(params, _routers(True), CFG, _tokens(5), budget=(1, 2))
  with pytest.raises(ValueError, match=r"budget schedule entry must be in \[0, 3\]"):
    router_lib.hard_routed(params, _routers(True), CFG, _tokens(5), budget=(4,) * T)


def test_teacher_forced_logits_equal_transformer_with_the_given_routes(params):
  route_BxTxL = routing.random_routes(jax.random.key(6), (B, T, L), p_big=0.5)
  out = router_lib.teacher_forced(params, _routers(False), CFG, _tokens(6), route_BxTxL)
  expected = Transformer(CFG).apply({"params": params}, _tokens(6), route_BxTxL=route_BxTxL)
  np.testing.assert_allclose(np.asarray(out.logits_BxTxV), np.asarray(expected), atol=1e-5)
  np.testing.assert_array_equal(out.route_BxTxL, route_BxTxL)
  with pytest.raises(ValueError, match="SKIP"):
    router_lib.teacher_forced(params, _routers(False), CFG, _tokens(6),
                              jnp.zeros((B, T, L), jnp.int32))


def test_budget_loss_by_hand():
  # L=4, k=1: P_big (.5, .5, 0, 0) and (0, 0, 0, 0) -> mean 1/8, target 1/4: (1/8)^2 = 1/64.
  p_big = jnp.array([[[.5, .5, 0., 0.], [0., 0., 0., 0.]]])
  assert float(router_train.budget_loss(p_big, 1, 4)) == pytest.approx(1 / 64)
  assert float(router_train.budget_loss(p_big, 0.5, 4)) == 0.0  # mean 1/8 = 0.5/4 exactly
  assert float(router_train.budget_loss(jnp.full((1, 2, 4), 0.25), 1, 4)) == 0.0
  assert float(router_train.budget_loss(jnp.full((1, 2, 4), 0.25), 2, 4)) == pytest.approx(1 / 16)


def test_schedule_budget_loss_by_hand():
  # T=4 in two segments, L=2; P_big 1 in the first segment, 0 in the second.
  p_big = jnp.array([[[1., 1.], [1., 1.], [0., 0.], [0., 0.]]])
  assert float(router_train.budget_loss(p_big, jnp.array([2., 0.]), 2)) == 0.0
  # Against the constant 1 (the schedule's mean): the paper's loss is zero, the per-segment
  # one is not: ((1 - 1/2)^2 + (0 - 1/2)^2) / 2 = 1/4.
  assert float(router_train.budget_loss(p_big, 1, 2)) == 0.0
  assert float(router_train.budget_loss(p_big, jnp.array([1., 1.]), 2)) == pytest.approx(0.25)
  np.testing.assert_array_equal(router_train.schedule_positions((8, 4), 4), [8, 8, 4, 4])
  with pytest.raises(ValueError, match="dividing the sequence length 5"):
    router_train.schedule_positions((8, 4), 5)


def test_imitation_loss_by_hand():
  # Two options: logits (0, log 3) give P(BIG) = 3/4; routes BIG then SMALL: -(log 3/4 + log 1/4)/2.
  logits = jnp.array([[[[0.0, np.log(3.0)]], [[0.0, np.log(3.0)]]]])
  routes = jnp.array([[[2], [1]]])
  expected = -(np.log(0.75) + np.log(0.25)) / 2
  assert float(router_train.imitation_loss(logits, routes)) == pytest.approx(expected, rel=1e-6)


def _small_router_config(**overrides):
  values = dict(router_small.get_config().router)
  values.update({"num_steps": 30, "batch_size": 8, "learning_rate": 3e-2, "alpha": 100.0,
                 "temperature_start": 1.0, "temperature_end": 0.1, **overrides})
  return router_train.RouterConfig(**values)


@pytest.mark.parametrize("budget", [0, 2])  # from about 1.4 big layers at init: down, up
def test_paper_router_training_moves_the_budget_toward_the_target(params, budget):
  tokens_NxT1 = _tokens(7, (32, T + 1))
  tokens_NxT, targets_NxT = tokens_NxT1[:, :-1], tokens_NxT1[:, 1:]
  key = jax.random.key(8)
  before = router_lib.init_router(jax.random.split(key)[0], CFG.d_model, L)  # as trained
  router_params, history = router_train.train_paper_router(
      params, CFG, _small_router_config(), tokens_NxT, targets_NxT, budget=budget, key=key)
  loss = history["router/loss"]
  assert loss[-5:].mean() < loss[:5].mean() - 1e-2, loss
  soft = history["router/big_layers"]  # L * mean P_big of the step's batch
  assert abs(soft[-1] - budget) < abs(soft[0] - budget) - 0.3, soft
  hard = lambda rp: router_train.evaluate_router(params, rp, CFG, tokens_NxT,
                                                 targets_NxT)["big_layers"]
  assert abs(hard(router_params) - budget) < abs(hard(before) - budget) - 0.3


def test_imitation_router_beats_the_marginal_rate_on_held_out_tokens():
  # Synthetic "oracle": BIG at layer l iff token id % (l + 2) == 0, else SMALL. Width 64 > 50
  # token ids, so a linear router on the (embedding-dominated) state can tell the ids apart.
  cfg_wide = dataclasses.replace(CFG, d_model=64)
  params = _init(cfg_wide)
  oracle = lambda tokens_BxT: jnp.where(
      tokens_BxT[..., None] % (jnp.arange(L) + 2) == 0, 2, 1).astype(jnp.int32)
  train_NxT, held_out_NxT = _tokens(9, (32, T)), _tokens(10, (16, T))
  cfg = _small_router_config(num_steps=200, batch_size=16, learning_rate=5e-2)
  router_params, history = router_train.train_imitation_router(
      params, cfg_wide, cfg, train_NxT, oracle(train_NxT), key=jax.random.key(11))
  assert history["router/loss"][-10:].mean() < history["router/loss"][:10].mean()
  target_NxTxL = np.asarray(oracle(held_out_NxT))
  marginal_L = np.maximum((target_NxTxL == 2).mean((0, 1)), (target_NxTxL == 1).mean((0, 1)))
  forced = router_lib.teacher_forced(params, router_params, cfg_wide, held_out_NxT, target_NxTxL)
  agree_L = (np.asarray(forced.router_logits_BxTxLxR).argmax(-1) + 1 == target_NxTxL).mean((0, 1))
  free = router_lib.hard_routed(params, router_params, cfg_wide, held_out_NxT)
  free_agree_L = (np.asarray(free.route_BxTxL) == target_NxTxL).mean((0, 1))
  # Teacher-forced (the oracle's path, as trained) and free-running (the router's own path).
  for agree in (agree_L, free_agree_L):
    assert np.all(agree > marginal_L) and agree.mean() > marginal_L.mean() + 0.2


def test_router_small_config_fits_duo_small():
  config = router_small.get_config()
  assert config.stage1_config == "configs/duo_small.py"  # the model its routers are trained on
  cfg = router_train.RouterConfig.from_dict(config.router)
  model = duo_small.get_config().model
  cfg.validate_for(model.num_layers, model.max_len)
  # What validate_for accepts, by hand: every budget a number of big layers the model has,
  # every schedule's segments of equal length with its mean one of the trained budgets, and
  # sequences that fit the model's context.
  for k in cfg.budgets + sum(cfg.schedules, ()):
    assert 0 <= k <= model.num_layers, k
  for schedule in cfg.schedules:
    assert cfg.seq_len % len(schedule) == 0 and np.mean(schedule) in cfg.budgets, schedule
  assert cfg.seq_len <= model.max_len
  # The fit is the model's: one layer fewer than the largest budget, or a shorter context, fails.
  with pytest.raises(ValueError, match="router.budgets entry"):
    cfg.validate_for(max(cfg.budgets) - 1, model.max_len)
  with pytest.raises(ValueError, match=r"router.seq_len \(128\) must be <= model.max_len"):
    cfg.validate_for(model.num_layers, cfg.seq_len - 1)


@pytest.mark.parametrize("field, value, message", [
    ("budgets", (2, 6, 13), r"router.budgets entry must be in \[0, 12\]"),
    ("budgets", (-1, 6), r"router.budgets entry must be in \[0, 12\]"),
    ("temperature_start", 0.0, r"router.temperature_start must be a number in \(0.0, inf\)"),
    ("temperature_end", -1.0, r"router.temperature_end must be a number in \(0.0, inf\)"),
    ("temperature_end", 2.0, "router.temperature_end .* must be <= router.temperature_start"),
    ("alpha", 0.0, r"router.alpha must be a number in \(0.0, inf\)"),
    ("num_steps", 0, "router.num_steps must be an integer >= 1"),
    ("seq_len", 4096, "router.seq_len"),
    ("oracle_seq_len", 256, "router.oracle_sequences x router.oracle_seq_len"),
    ("temperature", 1.0, "unknown router config fields"),
    ("schedules", ((8, 3),), r"mean budget 5.5, which must be one of router.budgets"),
    ("schedules", ((2, 4, 6),), "dividing router.seq_len"),
    ("schedules", ((13, -1),), r"router.schedules entry must be in \[0, 12\]"),
])
def test_bad_router_config_names_the_field(field, value, message):
  values = dict(router_small.get_config().router)
  values[field] = value
  model = duo_small.get_config().model
  with pytest.raises(ValueError, match=message):
    router_train.RouterConfig.from_dict(values).validate_for(model.num_layers, model.max_len)
