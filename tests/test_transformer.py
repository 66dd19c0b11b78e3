"""The Duo transformer against a per-token NumPy loop and against a plain dense transformer."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.duo_ffn import DuoFFN
from adaptive_jax.nn.kv_cache import KVCache, causal_access
from adaptive_jax.nn.transformer import DecoderLayer, Transformer, layer_params, unstack_layers
from tests import reference_transformer

CFG = ModelConfig(vocab_size=50, num_layers=3, d_model=16, num_heads=2, head_dim=8, d_ff_big=32,
                  d_ff_small=4, max_len=16)


def _init(cfg, tokens, routes=None):
  return nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), tokens, route_BxTxL=routes))


@pytest.fixture(scope="module")
def tokens_and_params():
  tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, CFG.vocab_size)
  params = _init(CFG, tokens, jnp.zeros((2, 7, CFG.num_layers), jnp.int32))["params"]
  # Random (not 1.0) norm scales, so a wrong norm placement cannot hide.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x * (1 + 0.3 * jax.random.normal(jax.random.key(len(path)), x.shape))
      if "scale" in jax.tree_util.keystr(path) else x, params)
  return tokens, params


def test_masked_dense_routing_matches_per_token_loop(tokens_and_params):
  tokens, params = tokens_and_params
  route = routing.random_routes(jax.random.key(2), (2, 7, CFG.num_layers), p_big=0.4, p_skip=0.3)
  assert set(np.unique(np.asarray(route))) == {0, 1, 2}
  logits = Transformer(CFG).apply({"params": params}, tokens, route_BxTxL=route)
  expected = reference_transformer.forward(jax.tree.map(np.asarray, params), np.asarray(tokens),
                                           np.asarray(route))
  np.testing.assert_allclose(np.asarray(logits), expected, atol=2e-4, rtol=2e-4)


def test_soft_one_hot_weights_equal_hard_routes(tokens_and_params):
  tokens, params = tokens_and_params
  route = routing.random_routes(jax.random.key(3), (2, 7, CFG.num_layers), p_big=0.3, p_skip=0.3)
  model = Transformer(CFG)
  hard = model.apply({"params": params}, tokens, route_BxTxL=route)
  soft = model.apply({"params": params}, tokens, weights_BxTxLxR=jax.nn.one_hot(route, 3))
  np.testing.assert_allclose(np.asarray(soft), np.asarray(hard), atol=1e-5)


def test_soft_weights_mix_the_two_ffn_outputs():
  x = jax.random.normal(jax.random.key(4), (2, 5, CFG.d_model))
  ffn = DuoFFN(CFG)
  params = nn.meta.unbox(ffn.init(jax.random.key(5), x, route_BxT=jnp.ones((2, 5), jnp.int32)))
  out = lambda r: np.asarray(ffn.apply(params, x, route_BxT=jnp.full((2, 5), r, jnp.int32)))
  skip, small, big = out(0), out(1), out(2)
  np.testing.assert_array_equal(skip, 0.0)
  w = jnp.broadcast_to(jnp.array([0.2, 0.3, 0.5]), (2, 5, 3))
  mixed = np.asarray(ffn.apply(params, x, weights_BxTxR=w))
  np.testing.assert_allclose(mixed, 0.3 * small + 0.5 * big, atol=1e-5)


def test_all_big_routing_equals_dense_transformer(tokens_and_params):
  tokens, params = tokens_and_params
  dense_cfg = dataclasses.replace(CFG, duo=False)
  layers = dict(params["layers"])
  layers["ffn"] = layers.pop("duo_ffn")["big"]
  dense_params = {**params, "layers": layers}
  chex.assert_trees_all_equal_shapes(dense_params, _init(dense_cfg, tokens)["params"])
  all_big = Transformer(CFG).apply({"params": params}, tokens,
                                   route_BxTxL=jnp.full((2, 7, CFG.num_layers), 2, jnp.int32))
  dense = Transformer(dense_cfg).apply({"params": dense_params}, tokens)
  np.testing.assert_allclose(np.asarray(all_big), np.asarray(dense), atol=1e-6)


def test_logits_are_causal(tokens_and_params):
  tokens, params = tokens_and_params
  route = jnp.ones((2, 7, CFG.num_layers), jnp.int32)
  base = Transformer(CFG).apply({"params": params}, tokens, route_BxTxL=route)
  changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % CFG.vocab_size)
  other = Transformer(CFG).apply({"params": params}, changed, route_BxTxL=route)
  np.testing.assert_allclose(np.asarray(base[:, :5]), np.asarray(other[:, :5]), atol=1e-6)
  assert not np.allclose(np.asarray(base[:, 5:]), np.asarray(other[:, 5:]))


@pytest.mark.parametrize("bad, message", [
    (jnp.zeros((2, 7, 2), jnp.int32), "num_layers=3"),
    (jnp.zeros((2, 7, 3), jnp.float32), "integer dtype"),
    (jnp.full((2, 7, 3), 3, jnp.int32), "SKIP=0, SMALL=1, BIG=2"),
    (jnp.full((2, 7, 3), -1, jnp.int32), "route_BxTxL values"),
])
def test_bad_route_arrays_raise_naming_the_field(tokens_and_params, bad, message):
  tokens, params = tokens_and_params
  with pytest.raises(ValueError, match=message) as info:
    Transformer(CFG).apply({"params": params}, tokens, route_BxTxL=bad)
  assert "route_BxTxL" in str(info.value)


def test_duo_model_requires_exactly_one_routing_input(tokens_and_params):
  tokens, params = tokens_and_params
  with pytest.raises(ValueError, match="exactly one"):
    Transformer(CFG).apply({"params": params}, tokens)


def test_layer_by_layer_application_equals_full_call(tokens_and_params):
  """The pieces the oracles walk through compose to the scanned model."""
  tokens, params = tokens_and_params
  route = routing.random_routes(jax.random.key(6), (2, 7, CFG.num_layers), p_big=0.4, p_skip=0.3)
  model = Transformer(CFG)
  x = model.apply({"params": params}, tokens, method=Transformer.embed_tokens)
  positions = jnp.broadcast_to(jnp.arange(7), (2, 7))
  for l in range(CFG.num_layers):
    layer = {"params": layer_params(params, l)}
    x = DecoderLayer(CFG).apply(layer, x, positions, method=DecoderLayer.attention_block)
    x = DecoderLayer(CFG).apply(layer, x, {"route": route[..., l]}, method=DecoderLayer.ffn_block)
  logits = model.apply({"params": params}, x, method=Transformer.logits)
  np.testing.assert_allclose(np.asarray(logits),
                             np.asarray(model.apply({"params": params}, tokens, route_BxTxL=route)),
                             atol=1e-5)


@pytest.mark.parametrize("unstacked", [False, True])
def test_cached_calls_equal_the_full_forward(tokens_and_params, unstacked):
  """Prefill a prefix into a KV cache, then feed the rest one token at a time: every
  position's logits equal the full forward's, under per-token routes; the same with the layer
  stack split (`unstack_layers`)."""
  tokens, params = tokens_and_params
  route = routing.random_routes(jax.random.key(4), (2, 7, CFG.num_layers), p_big=0.4, p_skip=0.3)
  model = Transformer(CFG)
  full_BxTxV = model.apply({"params": params}, tokens, route_BxTxL=route)
  if unstacked:
    params = unstack_layers(params)
    assert len(params["layers"]) == CFG.num_layers and unstack_layers(params) is params
    chex.assert_trees_all_equal(params["layers"][1], layer_params(tokens_and_params[1], 1))
    with pytest.raises(ValueError, match="the full forward needs the scanned stack"):
      model.apply({"params": params}, tokens, route_BxTxL=route)
  cache = KVCache.zeros(CFG, batch=2, num_slots=9)  # room to spare: unused slots stay unread
  prefill_Bx3xV, cache = model.apply({"params": params}, tokens[:, :3], route_BxTxL=route[:, :3],
                                     cache=cache)
  np.testing.assert_allclose(prefill_Bx3xV, full_BxTxV[:, :3], atol=1e-5)
  for t in range(3, 7):
    access = causal_access(t, 2, 1, cache.num_slots)
    logits_BxV, cache = model.apply({"params": params}, tokens[:, t:t + 1],
                                    route_BxTxL=route[:, t:t + 1], cache=cache,
                                    cache_access=access, output="last_logits")
    np.testing.assert_allclose(logits_BxV, full_BxTxV[:, t], atol=1e-5)


def test_hidden_output_is_what_the_logits_read(tokens_and_params):
  tokens, params = tokens_and_params
  route = jnp.full((2, 7, CFG.num_layers), routing.Route.BIG, jnp.int32)
  model = Transformer(CFG)
  h_BxTxD = model.apply({"params": params}, tokens, route_BxTxL=route, output="hidden")
  embed_VxD = params["embed"]["embedding"]
  np.testing.assert_allclose(jnp.einsum("btd,vd->btv", h_BxTxD, embed_VxD),
                             model.apply({"params": params}, tokens, route_BxTxL=route),
                             atol=1e-5)


def test_call_arguments_are_checked(tokens_and_params):
  tokens, params = tokens_and_params
  route = jnp.zeros((2, 7, CFG.num_layers), jnp.int32)
  apply = lambda **kw: Transformer(CFG).apply({"params": params}, tokens, route_BxTxL=route, **kw)
  with pytest.raises(ValueError, match="output must be one of"):
    apply(output="probs")
  with pytest.raises(ValueError, match="cache_access needs a cache"):
    apply(cache_access=causal_access(0, 2, 7, 7))
  with pytest.raises(ValueError, match="segment_ids_BxT"):
    apply(cache=KVCache.zeros(CFG, 2, 7), segment_ids_BxT=jnp.zeros((2, 7), jnp.int32))


def test_rows_of_different_lengths_extend_at_their_own_slots(tokens_and_params):
  """Per-row slots: after a 4-token prefill, row 0 continues at slot 4 with its own tokens and
  row 1 at slot 2 with other tokens (its stale slots 2-3 must be overwritten, not read); each
  matches the full forward of what its row now holds."""
  tokens, params = tokens_and_params
  route = routing.random_routes(jax.random.key(6), (2, 7, CFG.num_layers), p_big=0.5, p_skip=0.2)
  other_3 = (tokens[1, 2:5] + 1) % CFG.vocab_size
  held_BxT = tokens.at[1, 2:5].set(other_3)  # row 1: its first 2 tokens, then other ones
  model = Transformer(CFG)
  full_BxTxV = model.apply({"params": params}, held_BxT, route_BxTxL=route)
  cache = KVCache.zeros(CFG, batch=2, num_slots=8)
  _, cache = model.apply({"params": params}, tokens[:, :4], route_BxTxL=route[:, :4], cache=cache)
  lengths_B = jnp.array([4, 2])
  cols_Bx3 = lengths_B[:, None] + jnp.arange(3)
  rows_Bx1 = jnp.arange(2)[:, None]
  logits_Bx3xV, _ = model.apply(
      {"params": params}, held_BxT[rows_Bx1, cols_Bx3], route_BxTxL=route[rows_Bx1, cols_Bx3],
      cache=cache, cache_access=causal_access(lengths_B, 2, 3, cache.num_slots))
  np.testing.assert_allclose(logits_Bx3xV, full_BxTxV[rows_Bx1, cols_Bx3], atol=1e-5)


def test_a_write_past_the_cache_raises(tokens_and_params):
  tokens, params = tokens_and_params
  route = jnp.zeros((2, 7, CFG.num_layers), jnp.int32)
  with pytest.raises(ValueError, match="exceeds the cache's 6 slots"):
    Transformer(CFG).apply({"params": params}, tokens, route_BxTxL=route,
                           cache=KVCache.zeros(CFG, 2, 6))
