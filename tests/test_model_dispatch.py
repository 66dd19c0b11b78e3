"""The model with sparse dispatch (model.ffn_impl = "dispatch") against the masked model."""

import dataclasses
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax import routing
from adaptive_jax.nn import dispatch, router
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.kv_cache import KVCache
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.sampler import decode
from tests.fake_devices import run_with_inputs

MASKED = ModelConfig(vocab_size=40, num_layers=3, d_model=16, num_heads=2, head_dim=8,
                     d_ff_big=32, d_ff_small=8, max_len=32)
B, T = 4, 16  # 64 tokens per layer


def _dispatch(big: float, small: float = 1.0, groups: int = 1) -> ModelConfig:
  return dataclasses.replace(MASKED, ffn_impl="dispatch", dispatch_big_fraction=big,
                             dispatch_small_fraction=small, dispatch_groups=groups)


@pytest.fixture(scope="module")
def inputs():
  tokens_BxT = jax.random.randint(jax.random.key(0), (B, T), 0, MASKED.vocab_size)
  route_BxTxL = routing.random_routes(jax.random.key(1), (B, T, MASKED.num_layers), p_big=0.3,
                                      p_skip=0.2)
  params = nn.meta.unbox(Transformer(MASKED).init(jax.random.key(2), tokens_BxT,
                                                  route_BxTxL=route_BxTxL))["params"]
  return tokens_BxT, route_BxTxL, params


def _run(cfg, params, tokens_BxT, route_BxTxL):
  logits, state = Transformer(cfg).apply({"params": params}, tokens_BxT, route_BxTxL=route_BxTxL,
                                         mutable=["intermediates"])
  return np.asarray(logits), np.asarray(dispatch.overflow(state))


def _realized(route_BxTxL, capacity_big: int, capacity_small: int):
  """Per layer, the first `capacity` tokens of a route (batch-major order) keep it; the rest
  SKIP. Routes are given, not computed from states, so this is known before the forward."""
  route_NxL = np.asarray(route_BxTxL).reshape(-1, route_BxTxL.shape[-1]).copy()
  for l in range(route_NxL.shape[1]):
    for route, cap in ((routing.Route.BIG, capacity_big), (routing.Route.SMALL, capacity_small)):
      rows = np.flatnonzero(route_NxL[:, l] == route)
      route_NxL[rows[cap:], l] = routing.Route.SKIP
  return route_NxL.reshape(route_BxTxL.shape)


def test_enough_capacity_equals_the_masked_model(inputs):
  tokens_BxT, route_BxTxL, params = inputs
  masked, _ = _run(MASKED, params, tokens_BxT, route_BxTxL)
  for big, small in ((0.5, 0.6), (1.0, 1.0), (0.5, 1.0)):  # buffered, both dense, mixed
    logits, overflow_R = _run(_dispatch(big, small), params, tokens_BxT, route_BxTxL)
    np.testing.assert_array_equal(overflow_R, 0)
    np.testing.assert_allclose(logits, masked, atol=1e-5, err_msg=f"{big}, {small}")


def test_overflow_is_counted_and_drops_to_skip(inputs):
  tokens_BxT, route_BxTxL, params = inputs
  cap_big, cap_small = dispatch.capacity(B * T, 0.1), dispatch.capacity(B * T, 0.2)
  assert (cap_big, cap_small) == (8, 16)
  logits, overflow_R = _run(_dispatch(0.1, 0.2), params, tokens_BxT, route_BxTxL)
  realized = _realized(route_BxTxL, cap_big, cap_small)
  counts = lambda r: int(np.sum(np.asarray(route_BxTxL) == r) - np.sum(realized == r))
  np.testing.assert_array_equal(overflow_R, [0, counts(routing.Route.SMALL),
                                             counts(routing.Route.BIG)])
  assert overflow_R.sum() > 0
  expected, _ = _run(MASKED, params, tokens_BxT, jnp.asarray(realized))
  np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_config_fields_are_checked():
  with pytest.raises(ValueError, match="model.ffn_impl must be one of"):
    dataclasses.replace(MASKED, ffn_impl="sparse")
  with pytest.raises(ValueError, match="model.dispatch_big_fraction must be a number in"):
    _dispatch(1.5)
  with pytest.raises(ValueError, match="model.dispatch_groups"):
    _dispatch(0.5, groups=0)


def test_decoding_a_route_whose_buffer_would_drop_tokens_raises(inputs):
  _, _, params = inputs
  prompt_BxP, len_B = decode.left_pad([[1, 2, 3]])
  dec = decode.DecodeConfig(max_new_tokens=2, route=int(routing.Route.BIG))
  with pytest.raises(ValueError, match="model.dispatch_big_fraction must be 1 for decoding"):
    decode.sample(params, prompt_BxP, len_B, jax.random.split(jax.random.key(0), 1),
                  cfg=_dispatch(0.5), dec=dec)
  # Fraction 1: the dense path, the masked model's tokens.
  out = decode.sample(params, prompt_BxP, len_B, jax.random.split(jax.random.key(0), 1),
                      cfg=_dispatch(1.0), dec=dec)
  ref = decode.sample(params, prompt_BxP, len_B, jax.random.split(jax.random.key(0), 1),
                      cfg=MASKED, dec=dec)
  np.testing.assert_array_equal(out.tokens_BxM, ref.tokens_BxM)


_MESH_SCRIPT = textwrap.dedent("""
    import sys
    import flax, flax.linen as nn, jax, numpy as np
    from adaptive_jax.nn import dispatch
    from adaptive_jax.nn.config import ModelConfig
    from adaptive_jax.nn.transformer import Transformer
    from adaptive_jax.train.mesh import batch_sharding, make_mesh
    from configs import duo_small
    assert jax.device_count() == 8
    cfg = ModelConfig(**eval(sys.argv[2]))
    data = np.load(sys.argv[1] + "/inputs.npz")
    params = flax.serialization.msgpack_restore(open(sys.argv[1] + "/params.msgpack", "rb").read())
    rules = duo_small.get_config().train.logical_axis_rules
    mesh = make_mesh((8, 1))
    tokens, route = (jax.device_put(data[k], batch_sharding(mesh)) for k in ("tokens", "route"))
    def forward(p, t, r):
      logits, state = Transformer(cfg).apply({"params": p}, t, route_BxTxL=r,
                                             mutable=["intermediates"])
      return logits, dispatch.overflow(state)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      logits, overflow = jax.jit(forward)(params, tokens, route)
    assert len(logits.sharding.device_set) == 8 and not logits.sharding.is_fully_replicated
    np.savez(sys.argv[1] + "/mesh.npz", logits=np.asarray(logits), overflow=np.asarray(overflow))
""")


@pytest.mark.parametrize("big", [0.5, 0.0])  # 0: no BIG rows, every BIG token drops
def test_eight_devices_equal_one(inputs, tmp_path, big):
  """One dispatch group per data shard on 8 fake devices, ample and tight buffers: the same
  logits and overflow as the same groups on one device."""
  tokens_BxT, route_BxTxL, params = inputs
  tokens_8xT = jnp.concatenate([tokens_BxT, tokens_BxT[::-1]])
  route_8xTxL = jnp.concatenate([route_BxTxL, route_BxTxL[::-1]])
  cfg = _dispatch(big, 0.6, groups=8)
  run_with_inputs(_MESH_SCRIPT, tmp_path, params, cfg, tokens=tokens_8xT, route=route_8xTxL)
  sharded = np.load(tmp_path / "mesh.npz")
  logits, overflow_R = _run(cfg, params, tokens_8xT, route_8xTxL)
  np.testing.assert_allclose(sharded["logits"], logits, atol=1e-5)
  np.testing.assert_array_equal(sharded["overflow"], overflow_R)
  if big == 0.5:
    np.testing.assert_array_equal(overflow_R, 0)
    np.testing.assert_allclose(logits, _run(MASKED, params, tokens_8xT, route_8xTxL)[0], atol=1e-5)
  else:
    assert overflow_R.sum() > 0


def test_router_evaluation_takes_the_dispatch_path(inputs):
  """Hard-routed routers (router evaluation) through sparse dispatch: the masked model's
  logits and routes with ample buffers; the overflow reported with short ones."""
  tokens_BxT, _, params = inputs
  router_params = router.init_router(jax.random.key(5), MASKED.d_model, MASKED.num_layers,
                                     with_skip=True)
  masked = router.hard_routed(params, router_params, MASKED, tokens_BxT)
  ample = router.hard_routed(params, router_params, _dispatch(0.75, 0.75), tokens_BxT)
  assert dispatch.capacity(B * T, 0.75) == 48 < B * T  # buffered, not the dense path
  np.testing.assert_array_equal(masked.overflow_R, 0)
  np.testing.assert_array_equal(ample.overflow_R, 0)
  np.testing.assert_array_equal(ample.route_BxTxL, masked.route_BxTxL)
  np.testing.assert_allclose(ample.logits_BxTxV, masked.logits_BxTxV, atol=1e-5)
  short = router.hard_routed(params, router_params, _dispatch(0.0, 0.0), tokens_BxT)
  assert short.overflow_R[1:].sum() > 0


def test_short_buffers_without_an_overflow_collection_raise(inputs):
  """Buffers that can drop tokens need the caller to collect the count: never silent."""
  tokens_BxT, route_BxTxL, params = inputs
  with pytest.raises(ValueError, match="mutable=\\['intermediates'\\]"):
    Transformer(_dispatch(0.1, 0.2)).apply({"params": params}, tokens_BxT, route_BxTxL=route_BxTxL)
  # Buffers as large as the batch cannot drop: no collection needed.
  Transformer(_dispatch(1.0, 1.0)).apply({"params": params}, tokens_BxT, route_BxTxL=route_BxTxL)


def test_cached_calls_raise_or_report_like_the_full_call(inputs):
  """The cached path (prefill, decode) follows the caller: collected, the overflow equals the
  full call's; not collected, short buffers raise instead of dropping tokens unseen."""
  tokens_BxT, route_BxTxL, params = inputs
  cfg = _dispatch(0.1, 0.2)
  cache = KVCache.zeros(cfg, B, T)
  with pytest.raises(ValueError, match="mutable=\\['intermediates'\\]"):
    Transformer(cfg).apply({"params": params}, tokens_BxT, route_BxTxL=route_BxTxL, cache=cache)
  (logits, _), state = Transformer(cfg).apply(
      {"params": params}, tokens_BxT, route_BxTxL=route_BxTxL, cache=cache,
      mutable=["intermediates"])
  full_logits, full_overflow_R = _run(cfg, params, tokens_BxT, route_BxTxL)
  np.testing.assert_array_equal(dispatch.overflow(state), full_overflow_R)
  np.testing.assert_allclose(logits, full_logits, atol=1e-5)
