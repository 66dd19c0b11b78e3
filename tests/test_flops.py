"""The FLOP count against XLA's own cost analysis of one token's matmuls."""

import jax
import jax.numpy as jnp
import pytest

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.flops import forward_flops_per_token

CFG = ModelConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=2, head_dim=8, d_ff_big=96,
                  d_ff_small=0, max_len=64, duo=False)


def test_hand_count():
  # Per layer: 8*32*16 + 6*32*96 + 4*10*16 = 4096 + 18432 + 640; logits 2*32*64.
  assert forward_flops_per_token(CFG, 10) == 2 * (4096 + 18432 + 640) + 4096


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
