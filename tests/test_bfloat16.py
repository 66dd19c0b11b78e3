"""The bfloat16 path (configs/duo_paper.py trains with bfloat16 activations): the forward pass
and a train step agree with float32 within bfloat16's precision, and the logits stay float32."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.train.config import RoutingConfig
from adaptive_jax.train.step import train_step
from configs import duo_paper

F32 = ModelConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=2, head_dim=16,
                  d_ff_big=64, d_ff_small=8, max_len=16)
BF16 = dataclasses.replace(F32, dtype="bfloat16")  # activations; the params stay float32
B, T = 2, 16


def test_the_paper_config_trains_with_bfloat16_activations():
  assert duo_paper.get_config().model.dtype == "bfloat16"
  assert BF16.activation_dtype == jnp.bfloat16 and BF16.weight_dtype == jnp.float32


def _inputs():
  tokens_BxT = jax.random.randint(jax.random.key(0), (B, T + 1), 0, F32.vocab_size)
  route_BxTxL = routing.random_routes(jax.random.key(1), (B, T, F32.num_layers), p_big=0.5)
  params = nn.meta.unbox(Transformer(F32).init(jax.random.key(2), tokens_BxT[:, :-1],
                                               route_BxTxL=route_BxTxL))["params"]
  return tokens_BxT, route_BxTxL, params


def test_forward_agrees_with_float32_and_returns_float32_logits():
  tokens_BxT, route_BxTxL, params = _inputs()
  logits = {cfg.dtype: Transformer(cfg).apply({"params": params}, tokens_BxT[:, :-1],
                                              route_BxTxL=route_BxTxL) for cfg in (F32, BF16)}
  assert logits["bfloat16"].dtype == jnp.float32 == logits["float32"].dtype
  assert jnp.isfinite(logits["bfloat16"]).all()
  reference = np.asarray(logits["float32"])
  # bfloat16 keeps 8 bits of mantissa (relative error 2^-9 per rounding), over two layers.
  np.testing.assert_allclose(logits["bfloat16"], reference, atol=0.05 * np.abs(reference).max())
  assert not np.array_equal(logits["bfloat16"], reference)  # the bfloat16 path did run


def test_train_step_agrees_with_float32():
  tokens_BxT, _, params = _inputs()
  batch = {"inputs": tokens_BxT[:, :-1], "targets": tokens_BxT[:, 1:]}
  out = {}
  for cfg in (F32, BF16):
    state = train_state.TrainState.create(apply_fn=Transformer(cfg).apply, params=params,
                                          tx=optax.sgd(1.0))
    new_state, metrics = jax.jit(lambda s, b, cfg=cfg: train_step(
        s, b, model_cfg=cfg, routing_cfg=RoutingConfig(), route_key=jax.random.key(3)))(
            state, batch)
    out[cfg.dtype] = new_state, metrics
  (state32, m32), (state16, m16) = out["float32"], out["bfloat16"]
  assert m16["train/loss"].dtype == jnp.float32 and jnp.isfinite(m16["train/loss"])
  # The loss of random logits over 64 tokens is about log 64 = 4.16.
  assert m16["train/loss"] == pytest.approx(float(m32["train/loss"]), rel=1e-2)
  assert m16["train/grad_norm"] == pytest.approx(float(m32["train/grad_norm"]), rel=5e-2)
  # Plain SGD at rate 1: the update is minus the gradient, which agrees leaf by leaf.
  leaves = lambda tree: jax.tree_util.tree_leaves_with_path(tree)
  for (path, p32), (_, p16), (_, p0) in zip(leaves(state32.params), leaves(state16.params),
                                            leaves(params)):
    assert p16.dtype == jnp.float32, path
    g32, g16 = np.asarray(p0 - p32), np.asarray(p0 - p16)
    assert np.isfinite(g16).all(), path
    np.testing.assert_allclose(g16, g32, atol=0.05 * np.abs(g32).max() + 1e-6,
                               err_msg=jax.tree_util.keystr(path))
