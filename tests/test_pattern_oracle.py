"""Pattern oracle: prefix-shared loss matrix against brute force, budget choices by hand."""

import itertools
import math
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax import oracle, routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.routing import Route
from adaptive_jax.train.step import cross_entropy
from tests.fake_devices import run_with_inputs

L, B, T = 4, 2, 6
CFG = ModelConfig(vocab_size=40, num_layers=L, d_model=16, num_heads=2, head_dim=8, d_ff_big=32,
                  d_ff_small=4, max_len=8)


@pytest.fixture(scope="module")
def setup():
  tokens_BxT = jax.random.randint(jax.random.key(1), (B, T), 0, CFG.vocab_size)
  targets_BxT = jax.random.randint(jax.random.key(2), (B, T), 0, CFG.vocab_size)
  params = nn.meta.unbox(Transformer(CFG).init(jax.random.key(0), tokens_BxT,
                                               route_BxTxL=jnp.ones((B, T, L), jnp.int32)))
  return params["params"], tokens_BxT, targets_BxT


@pytest.fixture(scope="module")
def brute_force(setup):
  """loss_PxBxT by one full-model forward per pattern (route constant over tokens)."""
  params, tokens_BxT, targets_BxT = setup
  forward = jax.jit(lambda route_L: cross_entropy(Transformer(CFG).apply(
      {"params": params}, tokens_BxT, route_BxTxL=jnp.broadcast_to(route_L, (B, T, L))),
                                                   targets_BxT))
  return {skip: np.stack([forward(r) for r in oracle.pattern_routes(L, skip)])
          for skip in (False, True)}


def test_pattern_routes_order():
  s, b = Route.SMALL, Route.BIG  # the module docstring's table, L = 3
  expected = [[s, s, s], [s, s, b], [s, b, s], [s, b, b], [b, s, s], [b, s, b], [b, b, s],
              [b, b, b]]
  np.testing.assert_array_equal(oracle.pattern_routes(3), expected)
  routes = oracle.pattern_routes(3, with_skip=True)
  assert routes.shape == (27, 3) and routes.dtype == np.int32
  for index in (0, 5, 14, 26):  # base-3 digits, first layer most significant, are route ids
    np.testing.assert_array_equal(routes[index], [index // 9, index // 3 % 3, index % 3])


@pytest.mark.parametrize("with_skip,split_depth,chunk", [
    (False, None, None), (False, 0, None), (False, L, 3), (True, None, None), (True, 1, 2)])
def test_tree_equals_brute_force(setup, brute_force, with_skip, split_depth, chunk):
  params, tokens_BxT, targets_BxT = setup
  loss_PxBxT = oracle.pattern_loss_matrix(params, CFG, tokens_BxT, targets_BxT,
                                          with_skip=with_skip, split_depth=split_depth,
                                          chunk=chunk)
  assert loss_PxBxT.shape == ((3 if with_skip else 2)**L, B, T)
  np.testing.assert_allclose(np.asarray(loss_PxBxT), brute_force[with_skip], atol=1e-5)


def test_subset_equals_rows(setup, brute_force):
  params, tokens_BxT, targets_BxT = setup
  index_P = np.array([80, 0, 41, 41, 7, 13, 66, 2, 59, 30])  # a repeat; 10 rows pad to 12
  routes_PxL = oracle.pattern_routes(L, with_skip=True)[index_P]
  loss_PxBxT = oracle.subset_loss_matrix(params, CFG, tokens_BxT, targets_BxT, routes_PxL, chunk=4)
  np.testing.assert_allclose(np.asarray(loss_PxBxT), brute_force[True][index_P], atol=1e-5)


@pytest.mark.parametrize("with_skip", [False, True])
def test_oracle_fixed_random_order_and_exact_budgets(brute_force, with_skip):
  loss_PxBxT, routes_PxL = brute_force[with_skip], oracle.pattern_routes(L, with_skip)
  num_big = lambda index: (routes_PxL[index] == Route.BIG).sum(-1)
  table = oracle.budget_table(loss_PxBxT, routes_PxL, range(L + 1), seed=3)
  for k in range(L + 1):
    oracle_BxT, index_BxT = oracle.oracle(loss_PxBxT, routes_PxL, k)
    fixed_index, fixed_loss = oracle.fixed(loss_PxBxT, routes_PxL, k)
    random_index, random_loss = oracle.random_best_of(loss_PxBxT, routes_PxL, k, num=100, seed=3)
    assert oracle_BxT.mean() <= fixed_loss + 1e-6 <= random_loss + 2e-6
    assert (num_big(index_BxT) == k).all() and num_big(fixed_index) == num_big(random_index) == k
    np.testing.assert_allclose(oracle_BxT, np.take_along_axis(loss_PxBxT, index_BxT[None], 0)[0])
    assert fixed_loss == pytest.approx(loss_PxBxT[fixed_index].mean(), abs=1e-6)
    row = table[k]
    assert row["oracle_ppl"] == pytest.approx(math.exp(oracle_BxT.mean()), rel=1e-6)
    assert row["fixed_ppl"] == pytest.approx(math.exp(fixed_loss), rel=1e-6)
    assert row["random_best_ppl"] == pytest.approx(math.exp(random_loss), rel=1e-6)
    big_L = (routes_PxL[index_BxT.ravel()] == Route.BIG).mean(0)
    np.testing.assert_allclose(row["oracle_big_by_layer"], big_L)
    assert sum(row["oracle_big_by_layer"]) == pytest.approx(k)


def test_oracle_by_hand():
  s, b = Route.SMALL, Route.BIG
  routes_PxL = np.array([[s, s], [s, b], [b, s], [b, b]])
  loss_PxBxT = np.array([[[0.1, 5.0, 5.0]],   # ss: best everywhere it may be used (k = 0)
                         [[3.0, 1.0, 4.0]],   # sb
                         [[2.0, 3.0, 0.5]],   # bs
                         [[9.0, 9.0, 9.0]]], np.float32)  # bb
  loss_BxT, index_BxT = oracle.oracle(loss_PxBxT, routes_PxL, 1)
  np.testing.assert_allclose(loss_BxT, [[2.0, 1.0, 0.5]])
  np.testing.assert_array_equal(index_BxT, [[2, 1, 2]])
  assert oracle.fixed(loss_PxBxT, routes_PxL, 1) == (2, pytest.approx(5.5 / 3))
  assert oracle.fixed(loss_PxBxT, routes_PxL, 0) == (0, pytest.approx(10.1 / 3))
  # Only two candidates at k = 1: 100 draws with replacement find the best one.
  assert oracle.random_best_of(loss_PxBxT, routes_PxL, 1, num=100, seed=0)[0] == 2
  row = oracle.budget_table(loss_PxBxT, routes_PxL, [1])[1]
  assert row["oracle_ppl"] == pytest.approx(math.exp(3.5 / 3))
  np.testing.assert_allclose(row["oracle_big_by_layer"], [2 / 3, 1 / 3])


def test_scheduled_oracle_by_hand_and_against_a_per_position_loop():
  s, b = Route.SMALL, Route.BIG
  routes_PxL = np.array([[s, s], [s, b], [b, s], [b, b]])
  loss_PxBxT = np.array([[[0.1, 5.0, 5.0]], [[3.0, 1.0, 4.0]], [[2.0, 3.0, 0.5]],
                         [[9.0, 9.0, 9.0]]], np.float32)
  # Budgets 2, 0, 1 along the sequence: bb at t=0, ss at t=1, the best of sb/bs at t=2.
  loss_BxT, index_BxT = oracle.scheduled_oracle(loss_PxBxT, routes_PxL, [2, 0, 1])
  np.testing.assert_allclose(loss_BxT, [[9.0, 5.0, 0.5]])
  np.testing.assert_array_equal(index_BxT, [[3, 0, 2]])
  rng = np.random.default_rng(0)
  routes_PxL = np.asarray(oracle.pattern_routes(3))
  loss_PxBxT = rng.random((len(routes_PxL), 2, 6)).astype(np.float32)
  budget_T = np.array([3, 3, 1, 0, 2, 1])
  loss_BxT, _ = oracle.scheduled_oracle(loss_PxBxT, routes_PxL, budget_T)
  for t, k in enumerate(budget_T):
    np.testing.assert_array_equal(loss_BxT[:, t], oracle.oracle(loss_PxBxT, routes_PxL, k)[0][:, t])
  with pytest.raises(ValueError, match="one budget per position"):
    oracle.scheduled_oracle(loss_PxBxT, routes_PxL, [1, 2])


def test_bad_inputs_raise(setup):
  routes_PxL = oracle.pattern_routes(2)
  loss_PxBxT = np.zeros((4, 1, 3), np.float32)
  for k in (-1, 3, 1.5, True):
    with pytest.raises(ValueError, match="budget"):
      oracle.oracle(loss_PxBxT, routes_PxL, k)
  with pytest.raises(ValueError, match="no pattern .* exactly 2 big"):
    oracle.fixed(loss_PxBxT[:3], routes_PxL[:3], 2)
  with pytest.raises(ValueError, match="routes_PxL"):
    oracle.fixed(loss_PxBxT, routes_PxL[:3], 1)
  with pytest.raises(ValueError, match="routes_PxL values"):
    oracle.fixed(loss_PxBxT, routes_PxL + 2, 1)
  with pytest.raises(ValueError, match="loss_PxBxT"):
    oracle.oracle(loss_PxBxT[:, 0], routes_PxL, 1)
  with pytest.raises(ValueError, match="num"):
    oracle.random_best_of(loss_PxBxT, routes_PxL, 1, num=0)
  params, tokens_BxT, targets_BxT = setup
  with pytest.raises(ValueError, match="targets_BxT"):
    oracle.pattern_loss_matrix(params, CFG, tokens_BxT, targets_BxT[:, :3])
  with pytest.raises(ValueError, match="split_depth"):
    oracle.pattern_loss_matrix(params, CFG, tokens_BxT, targets_BxT, split_depth=L + 1)
  with pytest.raises(ValueError, match="routes_PxL"):
    oracle.subset_loss_matrix(params, CFG, tokens_BxT, targets_BxT, routes_PxL)


def test_flop_counts():
  assert oracle.shared_layer_evals(3, 2) == 2 + 4 + 8
  assert oracle.naive_layer_evals(3, 2) == 3 * 8
  assert oracle.shared_layer_evals(3, 3) == 3 + 9 + 27
  flops = routing.FlopModel(d_model=16, d_ff_small=4, d_ff_big=32, context=3)
  # One layer: sharing only saves the R - 1 repeated attentions.
  shared, naive = oracle.pattern_flops(flops, 1, 40, with_skip=True)
  assert naive - shared == pytest.approx(2 * flops.attention())
  shared, naive = oracle.pattern_flops(flops, 12, 40)
  assert 1 / 12 < shared / naive < 0.5


@pytest.mark.parametrize("num_layers, with_skip", [(4, False), (3, True)])
def test_pattern_flops_equal_brute_force_over_the_tree(num_layers, with_skip):
  flops = routing.FlopModel(d_model=16, d_ff_small=4, d_ff_big=32, context=3)
  options = oracle.route_options(with_skip)
  patterns = list(itertools.product(options, repeat=num_layers))
  logits = 2.0 * 16 * 40
  # Naive: every pattern runs every layer's attention and its chosen FFN, then the logits.
  naive = sum(sum(flops.attention() + flops.ffn(r) for r in p) + logits for p in patterns)
  # Shared: each distinct proper prefix is a node that runs one attention and every option.
  nodes = {p[:depth] for p in patterns for depth in range(num_layers)}
  shared = len(nodes) * (flops.attention() + sum(flops.ffn(r) for r in options))
  shared += len(patterns) * logits
  assert oracle.pattern_flops(flops, num_layers, 40, with_skip=with_skip) == pytest.approx(
      (shared, naive), rel=1e-12)


_SHARDED_SCRIPT = textwrap.dedent("""
    import sys
    import flax, jax, numpy as np
    from adaptive_jax import oracle
    from adaptive_jax.nn.config import ModelConfig
    from adaptive_jax.train.mesh import make_mesh
    assert jax.device_count() == 8
    cfg = ModelConfig(**eval(sys.argv[2]))
    data = np.load(sys.argv[1] + "/inputs.npz")
    params = flax.serialization.msgpack_restore(open(sys.argv[1] + "/params.msgpack", "rb").read())
    args = (params, cfg, data["tokens"], data["targets"])
    out = {}
    # (2, 4): batch over 'data', tree nodes over 'model'; (8, 1): B=2 does not split 8 ways,
    # so nodes go over all 8 devices (3^L roots padded to whole chunks).
    loss = oracle.pattern_loss_matrix(*args, mesh=make_mesh((2, 4)))
    assert len(loss.sharding.device_set) == 8 and not loss.sharding.is_fully_replicated
    out["tree"] = loss
    out["tree_skip"] = oracle.pattern_loss_matrix(*args, with_skip=True, mesh=make_mesh((8, 1)))
    out["subset"] = oracle.subset_loss_matrix(*args, data["routes"], mesh=make_mesh((2, 4)))
    np.savez(sys.argv[1] + "/sharded.npz", **{k: np.asarray(v) for k, v in out.items()})
""")


def test_sharded_equals_unsharded(setup, tmp_path):
  params, tokens_BxT, targets_BxT = setup
  routes_PxL = oracle.pattern_routes(L, with_skip=True)[::7]
  args = (params, CFG, tokens_BxT, targets_BxT)
  expected = {"tree": oracle.pattern_loss_matrix(*args),
              "tree_skip": oracle.pattern_loss_matrix(*args, with_skip=True),
              "subset": oracle.subset_loss_matrix(*args, routes_PxL)}
  run_with_inputs(_SHARDED_SCRIPT, tmp_path, params, CFG, tokens=tokens_BxT,
                  targets=targets_BxT, routes=routes_PxL)
  sharded = np.load(tmp_path / "sharded.npz")
  for name, loss_PxBxT in expected.items():
    np.testing.assert_allclose(sharded[name], np.asarray(loss_PxBxT), atol=1e-5, err_msg=name)
