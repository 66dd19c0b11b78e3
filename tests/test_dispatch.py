"""Sparse dispatch vs the masked dense Duo-FFN: hand-made grouping, overflow, groups, mesh."""

import functools
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax import routing
from adaptive_jax.nn import dispatch
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.duo_ffn import DuoFFN
from adaptive_jax.routing import Route
from tests.fake_devices import run_with_inputs

CFG = ModelConfig(vocab_size=40, num_layers=1, d_model=16, num_heads=2, head_dim=8, d_ff_big=32,
                  d_ff_small=8, max_len=16)
S, M, G = Route.SKIP, Route.SMALL, Route.BIG


@pytest.fixture(scope="module")
def boxed_params():
  x = jnp.ones((1, 2, CFG.d_model))
  return DuoFFN(CFG).init(jax.random.key(0), x, route_BxT=jnp.ones((1, 2), jnp.int32))["params"]


@pytest.fixture(scope="module")
def params(boxed_params):
  return nn.meta.unbox(boxed_params)


@functools.partial(jax.jit, static_argnames="cfg")
def masked(params, x_BxTxD, route_BxT, cfg=CFG):
  return DuoFFN(cfg).apply({"params": params}, x_BxTxD, route_BxT=route_BxT)


def _inputs(seed, b, t, p_big=0.3, p_skip=0.2):
  k_x, k_r = jax.random.split(jax.random.key(seed))
  x_BxTxD = jax.random.normal(k_x, (b, t, CFG.d_model))
  route_BxT = routing.random_routes(k_r, (b, t, 1), p_big=p_big, p_skip=p_skip)[..., 0]
  return x_BxTxD, route_BxT


def _reference_realized(route_N, capacity_small, capacity_big):
  """Per-token loop: the first `capacity` tokens of a route keep it, the rest go to SKIP."""
  left = {int(S): len(route_N), int(M): capacity_small, int(G): capacity_big}
  realized = []
  for r in np.asarray(route_N).tolist():
    realized.append(r if left[r] > 0 else int(S))
    left[r] -= 1
  return np.array(realized)


def test_capacity_examples_and_errors():
  assert dispatch.capacity(2048, 0.25, 1.25) == 640  # the docstring's examples
  assert dispatch.capacity(10, 0.5) == 8
  assert dispatch.capacity(10, 0.9) == 10
  assert dispatch.capacity(100, 0.0) == 0
  assert dispatch.capacity(100, 0.3, multiple=1) == 30
  with pytest.raises(ValueError, match="num_tokens"):
    dispatch.capacity(0, 0.5)
  with pytest.raises(ValueError, match="fraction"):
    dispatch.capacity(10, 1.5)
  with pytest.raises(ValueError, match="capacity_factor"):
    dispatch.capacity(10, 0.5, -1.0)
  with pytest.raises(ValueError, match="multiple"):
    dispatch.capacity(10, 0.5, multiple=0)


@pytest.mark.parametrize("shape", [(3, 10), (30,)])
def test_matches_masked_dense_when_capacity_suffices(params, shape):
  x_BxTxD, route_BxT = _inputs(1, 3, 10)
  x_BxTxD, route_BxT = x_BxTxD.reshape(shape + (-1,)), route_BxT.reshape(shape)
  assert set(np.unique(route_BxT)) == {S, M, G}
  counts = [int(jnp.sum(route_BxT == r)) for r in (M, G)]
  expected = masked(params, x_BxTxD.reshape(3, 10, -1), route_BxT.reshape(3, 10))
  # Exactly enough rows, and more than enough (empty rows must not leak into the output).
  for cap_small, cap_big in (counts, (counts[0] + 5, 30)):
    y, realized, overflow_R = dispatch.dispatch_ffn(params, x_BxTxD, route_BxT, cfg=CFG,
                                                    capacity_small=cap_small, capacity_big=cap_big)
    assert y.shape == x_BxTxD.shape and realized.shape == route_BxT.shape
    np.testing.assert_allclose(y.reshape(3, 10, -1), expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(y.reshape(-1, CFG.d_model)[np.ravel(route_BxT) == S], 0.0)
    np.testing.assert_array_equal(realized, route_BxT)
    np.testing.assert_array_equal(overflow_R, [0, 0, 0])


def test_plan_worked_example(boxed_params):
  route_N = jnp.array([G, M, G, S, G, M], jnp.int32)  # the module docstring's example
  plan = dispatch.plan_dispatch(route_N, capacity_small=2, capacity_big=2)
  np.testing.assert_array_equal(plan.row_N, [2, 0, 3, 4, 4, 1])
  np.testing.assert_array_equal(plan.token_of_row_C, [1, 5, 0, 2])
  np.testing.assert_array_equal(plan.realized_route_N, [G, M, G, S, S, M])
  np.testing.assert_array_equal(plan.overflow_R, [0, 0, 1])
  # Spare rows: small slot 2 and big slots 3..4 stay empty (token id N = 6).
  plan = dispatch.plan_dispatch(route_N, capacity_small=3, capacity_big=5)
  np.testing.assert_array_equal(plan.row_N, [3, 0, 4, 8, 5, 1])
  np.testing.assert_array_equal(plan.token_of_row_C, [1, 5, 6, 0, 2, 4, 6, 6])
  np.testing.assert_array_equal(plan.overflow_R, [0, 0, 0])
  # Boxed params work too; the dropped and the SKIP token get exact zeros.
  x_NxD = jax.random.normal(jax.random.key(3), (6, CFG.d_model))
  y, _, _ = dispatch.dispatch_ffn(boxed_params, x_NxD, route_N, cfg=CFG, capacity_small=2,
                                  capacity_big=2)
  np.testing.assert_array_equal(y[3:5], 0.0)
  expected = masked(nn.meta.unbox(boxed_params), x_NxD[None],
                    jnp.array([[G, M, G, S, S, M]]))[0]
  np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("short_small,cap_big", [(3, None), (0, 0), (100, 2)])
def test_overflow_counts_and_realized_routes(params, short_small, cap_big):
  x_BxTxD, route_BxT = _inputs(2, 2, 16, p_big=0.4, p_skip=0.1)
  n_small, n_big = (int(jnp.sum(route_BxT == r)) for r in (M, G))
  cap_small = max(n_small - short_small, 0)
  cap_big = n_big // 2 if cap_big is None else cap_big
  y, realized, overflow_R = dispatch.dispatch_ffn(params, x_BxTxD, route_BxT, cfg=CFG,
                                                  capacity_small=cap_small, capacity_big=cap_big)
  np.testing.assert_array_equal(overflow_R, [0, n_small - cap_small, n_big - cap_big])
  np.testing.assert_array_equal(
      realized.reshape(-1), _reference_realized(route_BxT.reshape(-1), cap_small, cap_big))
  assert realized.dtype == route_BxT.dtype
  np.testing.assert_allclose(y, masked(params, x_BxTxD, realized), atol=1e-5, rtol=1e-5)


def test_jit_and_gradients_match_masked(params):
  x_BxTxD, route_BxT = _inputs(4, 2, 12)
  caps = dict(capacity_small=8, capacity_big=4)  # tight: some tokens overflow
  jitted = jax.jit(dispatch.dispatch_ffn, static_argnames=("cfg", "capacity_small",
                                                           "capacity_big"))
  y, realized, overflow_R = jitted(params, x_BxTxD, route_BxT, cfg=CFG, **caps)
  eager = dispatch.dispatch_ffn(params, x_BxTxD, route_BxT, cfg=CFG, **caps)
  assert int(overflow_R.sum()) > 0
  for a, b in zip((y, realized, overflow_R), eager):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # The same params get the same gradients through either path (on the realized routes).
  cotangent = jax.random.normal(jax.random.key(5), x_BxTxD.shape)
  sparse_loss = lambda p, x: jnp.sum(
      dispatch.dispatch_ffn(p, x, route_BxT, cfg=CFG, **caps)[0] * cotangent)
  masked_loss = lambda p, x: jnp.sum(masked(p, x, realized) * cotangent)
  ours = jax.jit(jax.grad(sparse_loss, argnums=(0, 1)))(params, x_BxTxD)
  reference = jax.grad(masked_loss, argnums=(0, 1))(params, x_BxTxD)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), ours,
               reference)


@pytest.mark.parametrize("value", [-1, 2.5, True, "4", None])
def test_bad_capacity_raises_naming_it(params, value):
  x_NxD, route_N = jnp.zeros((4, CFG.d_model)), jnp.ones((4,), jnp.int32)
  for name in ("capacity_small", "capacity_big"):
    caps = {"capacity_small": 4, "capacity_big": 4, name: value}
    with pytest.raises(ValueError, match=name):
      dispatch.dispatch_ffn(params, x_NxD, route_N, cfg=CFG, **caps)
    with pytest.raises(ValueError, match=name):
      dispatch.plan_dispatch(route_N, **caps)


def test_bad_inputs_raise_naming_them(params):
  x_NxD, caps = jnp.zeros((4, CFG.d_model)), dict(capacity_small=4, capacity_big=4)
  with pytest.raises(ValueError, match="route_BxT"):
    dispatch.dispatch_ffn(params, x_NxD, jnp.array([0, 1, 2, 3]), cfg=CFG, **caps)
  with pytest.raises(ValueError, match="route_BxT"):
    dispatch.dispatch_ffn(params, x_NxD, jnp.ones((5,), jnp.int32), cfg=CFG, **caps)
  with pytest.raises(ValueError, match="route_BxT"):
    dispatch.dispatch_ffn(params, x_NxD, jnp.ones((4,), jnp.float32), cfg=CFG, **caps)
  with pytest.raises(ValueError, match="x_BxTxD"):
    dispatch.dispatch_ffn(params, jnp.zeros((4, 3)), jnp.ones((4,), jnp.int32), cfg=CFG, **caps)


def test_groups_dispatch_each_block_on_its_own(params):
  """groups=G equals G separate calls on the blocks of the leading axis, overflow summed."""
  x_BxTxD, route_BxT = _inputs(6, 8, 8)
  y, realized, overflow_R = dispatch.dispatch_ffn(params, x_BxTxD, route_BxT, cfg=CFG,
                                                  capacity_small=3, capacity_big=2, groups=4)
  blocks = [dispatch.dispatch_ffn(params, x, r, cfg=CFG, capacity_small=3, capacity_big=2)
            for x, r in zip(np.split(x_BxTxD, 4), np.split(route_BxT, 4))]
  np.testing.assert_allclose(y, np.concatenate([b[0] for b in blocks]), atol=1e-6)
  np.testing.assert_array_equal(realized, np.concatenate([b[1] for b in blocks]))
  np.testing.assert_array_equal(overflow_R, np.sum([b[2] for b in blocks], axis=0))
  assert overflow_R.sum() > 0
  with pytest.raises(ValueError, match="groups"):
    dispatch.dispatch_ffn(params, x_BxTxD, route_BxT, cfg=CFG, capacity_small=3, capacity_big=2,
                          groups=3)


_MESH_SCRIPT = textwrap.dedent("""
    import re, sys
    import flax, flax.linen as nn, jax, numpy as np
    from adaptive_jax.nn import dispatch
    from adaptive_jax.nn.config import ModelConfig
    from adaptive_jax.train.mesh import batch_sharding, make_mesh
    from configs import duo_small
    assert jax.device_count() == 8
    cfg = ModelConfig(**eval(sys.argv[2]))
    data = np.load(sys.argv[1] + "/inputs.npz")
    params = flax.serialization.msgpack_restore(open(sys.argv[1] + "/params.msgpack", "rb").read())
    rules = duo_small.get_config().train.logical_axis_rules  # 'batch' -> data, 'mlp' -> model
    out = {}
    for shape in ((8, 1), (4, 2)):
      mesh = make_mesh(shape)
      x, route = (jax.device_put(data[k], batch_sharding(mesh)) for k in ("x", "route"))
      for name, caps in (("tight", (3, 2)), ("ample", (16, 16))):
        forward = lambda p, x, r: dispatch.dispatch_ffn(
            p, x, r, cfg=cfg, capacity_small=caps[0], capacity_big=caps[1], groups=shape[0])
        backward = jax.grad(lambda p, x: (forward(p, x, route)[0] ** 2).sum(), argnums=(0, 1))
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
          compiled_forward = jax.jit(forward).lower(params, x, route).compile()
          compiled_backward = jax.jit(backward).lower(params, x).compile()
        y, realized, overflow = compiled_forward(params, x, route)
        grads = compiled_backward(params, x)
        hlo = compiled_forward.as_text() + compiled_backward.as_text()
        assert len(y.sharding.device_set) == 8 and not y.sharding.is_fully_replicated
        # Each shard dispatches its own tokens: nothing moves between shards but sums.
        moved = set(re.findall("all-gather|all-to-all|collective-permute", hlo))
        assert not moved, moved
        key = f"{name}_{shape[0]}x{shape[1]}"
        out.update({key + "_y": y, key + "_realized": realized, key + "_overflow": overflow,
                    key + "_dx": grads[1], key + "_dbig_down": grads[0]["big"]["down"]})
    np.savez(sys.argv[1] + "/mesh.npz", **{k: np.asarray(v) for k, v in out.items()})
""")


def test_mesh_equals_single_device(params, tmp_path):
  """On 8 fake devices, one group per data shard: equal to the same groups on one device."""
  x_BxTxD, route_BxT = _inputs(6, 8, 8)
  run_with_inputs(_MESH_SCRIPT, tmp_path, params, CFG, x=x_BxTxD, route=route_BxT)
  sharded = np.load(tmp_path / "mesh.npz")
  for name, caps in (("tight", (3, 2)), ("ample", (16, 16))):
    for groups in (8, 4):
      run = jax.jit(lambda p, x: dispatch.dispatch_ffn(
          p, x, route_BxT, cfg=CFG, capacity_small=caps[0], capacity_big=caps[1], groups=groups))
      y, realized, overflow_R = run(params, x_BxTxD)
      dparams, dx = jax.jit(jax.grad(lambda p, x: (run(p, x)[0] ** 2).sum(), argnums=(0, 1)))(
          params, x_BxTxD)
      key = f"{name}_{groups}x{8 // groups}"
      np.testing.assert_allclose(sharded[key + "_y"], y, atol=1e-5, err_msg=key)
      np.testing.assert_array_equal(sharded[key + "_realized"], realized, err_msg=key)
      np.testing.assert_array_equal(sharded[key + "_overflow"], overflow_R, err_msg=key)
      np.testing.assert_allclose(sharded[key + "_dx"], dx, atol=1e-5, rtol=1e-5, err_msg=key)
      np.testing.assert_allclose(sharded[key + "_dbig_down"], dparams["big"]["down"], atol=1e-4,
                                 rtol=1e-5, err_msg=key)
      if name == "tight":
        assert overflow_R.sum() > 0
      else:  # 16 rows per route hold every group's tokens: the masked dense result
        np.testing.assert_array_equal(overflow_R, 0)
        np.testing.assert_allclose(y, masked(params, x_BxTxD, route_BxT), atol=1e-5)
