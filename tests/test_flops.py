"""The FLOP count against hand counts (grouped-query too) and XLA's cost analysis of one
token's matmuls."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.flops import forward_flops_per_token
from adaptive_jax.routing import Route

CFG = ModelConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=2, head_dim=8, d_ff_big=96,
                  d_ff_small=0, max_len=64, duo=False)


def test_hand_count():
  # Per layer: 8*32*16 + 6*32*96 + 4*10*16 = 4096 + 18432 + 640; logits 2*32*64.
  assert forward_flops_per_token(CFG, 10) == 2 * (4096 + 18432 + 640) + 4096


# Grouped-query attention with N * H != D: 3 query heads and 1 kv head of width 8 on D = 32.
GQA_DUO = ModelConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=3, num_kv_heads=1,
                      head_dim=8, d_ff_big=96, d_ff_small=40, max_len=64)


def test_grouped_query_hand_count_is_the_same_in_both_models():
  # Per layer: q and out 2 * (2*32*24) = 3072, k and v 2 * (2*32*8) = 1024, scores and values
  # 2 * (2*10*24) = 960; SwiGLU 3 * (2*32*96) = 18432 (big), 3 * (2*32*40) = 7680 (small).
  layer = routing.FlopModel.from_config(GQA_DUO, context=10)
  assert layer.attention() == 3072 + 1024 + 960
  assert (layer.ffn(Route.SMALL), layer.ffn(Route.BIG)) == (7680, 18432)
  route_1x1xL = [[[Route.BIG, Route.SMALL]]]
  assert layer.route_flops(route_1x1xL)[0, 0] == 2 * 5056 + 18432 + 7680
  dense = dataclasses.replace(GQA_DUO, duo=False)
  logits = 2 * 32 * 64
  assert forward_flops_per_token(dense, 10) == 2 * (5056 + 18432) + logits
  all_big_1x1xL = [[[Route.BIG, Route.BIG]]]
  assert (routing.FlopModel.from_config(dense, 10).route_flops(all_big_1x1xL)[0, 0] + logits
          == forward_flops_per_token(dense, 10))


def test_multi_head_defaults_match_the_config():
  mha = dataclasses.replace(GQA_DUO, num_heads=4, num_kv_heads=None)  # 4 * 8 = D
  assert (routing.FlopModel(32, 40, 96, context=10).attention()
          == routing.FlopModel.from_config(mha, 10).attention() == 8 * 32**2 + 4 * 10 * 32)


def test_matches_xla_matmul_count():
  """The same matmuls written out, counted by XLA (which counts 2 per multiply-add)."""
  d, inner, f, v, ctx = CFG.d_model, 16, CFG.d_ff_big, CFG.vocab_size, 10

  def one_token(x_D, wq, wk, wv, wo, w1, w2, w3, keys_CxI, values_CxI, emb_VxD):
    q, k, val = x_D @ wq, x_D @ wk, x_D @ wv
    scores_C = keys_CxI @ q
    attn_I = scores_C @ values_CxI
    x_D = x_D + attn_I @ wo
    x_D = x_D + ((x_D @ w1) * (x_D @ w3)) @ w2
    return x_D, k, val

  shapes = [(d,), (d, inner), (d, inner), (d, inner), (inner, d), (d, f), (f, d), (d, f),
            (ctx, inner), (ctx, inner), (v, d)]
  args = [jnp.ones(s) for s in shapes]
  layer = jax.jit(one_token).lower(*args).compile().cost_analysis()["flops"]
  logits = jax.jit(lambda x, e: e @ x).lower(args[0], args[-1]).compile().cost_analysis()["flops"]
  # XLA also counts the elementwise adds and the SwiGLU product: allow those few.
  expected = forward_flops_per_token(CFG, ctx)
  assert abs(CFG.num_layers * layer + logits - expected) / expected < 0.01


def test_rejects_duo_and_negative_context():
  with pytest.raises(ValueError, match="model.duo"):
    forward_flops_per_token(ModelConfig(vocab_size=8, num_layers=1, d_model=8, num_heads=1,
                                        head_dim=8, d_ff_big=8, d_ff_small=4, max_len=8), 1)
  with pytest.raises(ValueError, match="context"):
    forward_flops_per_token(CFG, -1)
