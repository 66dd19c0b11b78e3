"""Grouped-query attention: the full forward, the decode cache and the sequential oracle agree.

Reference: a multi-head model whose key/value weights are the grouped ones repeated per group
(query head n reads kv head n // (N / K)) must give the same logits as the grouped model.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.oracle import sequential
from adaptive_jax.sampler import decode
from adaptive_jax.train.step import cross_entropy

GQA = ModelConfig(vocab_size=40, num_layers=2, d_model=24, num_heads=6, head_dim=8, d_ff_big=32,
                  d_ff_small=8, max_len=32, num_kv_heads=2)
MHA = dataclasses.replace(GQA, num_kv_heads=None)


def _init(cfg, tokens_BxT):
  route = jnp.ones(tokens_BxT.shape + (cfg.num_layers,), jnp.int32)
  return nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), tokens_BxT,
                                             route_BxTxL=route))["params"]


def _as_multi_head(params):
  """Key/value weights [D, K, H] -> [D, N, H], head n a copy of kv head n // (N / K)."""
  group = GQA.num_heads // GQA.kv_heads
  def widen(path, x):
    name = jax.tree_util.keystr(path)
    return jnp.repeat(x, group, axis=-2) if name.endswith(("['key']", "['value']")) else x
  return jax.tree_util.tree_map_with_path(widen, params)


@pytest.fixture(scope="module")
def setup():
  tokens_BxT = jax.random.randint(jax.random.key(1), (2, 9), 0, GQA.vocab_size)
  params = _init(GQA, tokens_BxT)
  assert jax.tree.leaves(params["layers"]["attention"]["key"])[0].shape[-2] == 2
  return tokens_BxT, params


def test_grouped_forward_equals_multi_head_with_repeated_kv(setup):
  tokens_BxT, params = setup
  route = jnp.full(tokens_BxT.shape + (GQA.num_layers,), routing.Route.BIG, jnp.int32)
  gqa = Transformer(GQA).apply({"params": params}, tokens_BxT, route_BxTxL=route)
  mha = Transformer(MHA).apply({"params": _as_multi_head(params)}, tokens_BxT, route_BxTxL=route)
  np.testing.assert_allclose(gqa, mha, atol=1e-5)
  # A different grouping (head n reads kv head n % K) gives other logits: the test can fail.
  swapped = jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.tile(x, (1,) * (x.ndim - 2) + (3, 1))
      if jax.tree_util.keystr(p).endswith(("['key']", "['value']")) else x, params)
  other = Transformer(MHA).apply({"params": swapped}, tokens_BxT, route_BxTxL=route)
  assert not np.allclose(gqa, other, atol=1e-3)


def test_grouped_decode_equals_full_recompute(setup):
  _, params = setup
  prompts = [[1, 5, 9, 4], [1, 3], [1, 8, 8, 2, 6, 6]]
  dec = decode.DecodeConfig(max_new_tokens=6, policy=decode.SamplingPolicy(temperature=0.0),
                            route=int(routing.Route.BIG))
  prompt_BxP, prompt_len_B = decode.left_pad(prompts)
  out = decode.sample(params, prompt_BxP, prompt_len_B, jax.random.split(jax.random.key(3), 3),
                      cfg=GQA, dec=dec)
  for b, prompt in enumerate(prompts):  # greedy: the argmax of the full model, token by token
    seq = list(prompt)
    for t in range(dec.max_new_tokens):
      tokens = jnp.asarray([seq])
      route = jnp.full((1, len(seq), GQA.num_layers), routing.Route.BIG, jnp.int32)
      logits = Transformer(GQA).apply({"params": params}, tokens, route_BxTxL=route)
      seq.append(int(jnp.argmax(logits[0, -1])))
      assert int(out.tokens_BxM[b, t]) == seq[-1], (b, t)


def test_grouped_sequential_oracle_replays_through_the_full_model(setup):
  tokens_BxT, params = setup
  inputs_BxT, targets_BxT = tokens_BxT[:, :-1], tokens_BxT[:, 1:]
  route_KxBxTxL, loss_KxBxT = sequential.sequential_oracle(params, GQA, inputs_BxT, targets_BxT,
                                                           (1, 2))
  for i in range(2):
    logits = Transformer(GQA).apply({"params": params}, inputs_BxT, route_BxTxL=route_KxBxTxL[i])
    np.testing.assert_allclose(cross_entropy(logits, targets_BxT), loss_KxBxT[i], atol=1e-5)


def test_num_kv_heads_must_divide_num_heads():
  with pytest.raises(ValueError, match=r"model.num_kv_heads must be None or a positive divisor "
                                       r"of model.num_heads=6, got 4"):
    dataclasses.replace(GQA, num_kv_heads=4)
