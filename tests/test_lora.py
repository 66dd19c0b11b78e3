"""LoRA as a params reparametrization: starts at the base, W + (alpha / r) A @ B per layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from adaptive_jax.nn import lora
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer

CFG = ModelConfig(vocab_size=40, num_layers=2, d_model=16, num_heads=2, head_dim=4,
                  d_ff_big=24, d_ff_small=0, max_len=16, duo=False)


@pytest.fixture(scope="module")
def params():
  return nn.meta.unbox(Transformer(CFG).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
                       ["params"])


def test_fresh_adapters_leave_the_params_unchanged(params):
  adapters = lora.init_lora(params, rank=3, key=jax.random.key(1))
  assert sorted(adapters) == ["layers/attention/key", "layers/attention/out",
                              "layers/attention/query", "layers/attention/value",
                              "layers/ffn/down", "layers/ffn/gate", "layers/ffn/up"]
  merged = lora.merge_lora(params, adapters, alpha=6.0, rank=3)
  jax.tree.map(np.testing.assert_array_equal, merged, params)


def test_merge_adds_the_scaled_product_per_layer(params):
  adapters = lora.init_lora(params, rank=2, key=jax.random.key(1), targets=("out", "down"))
  rng = np.random.default_rng(0)
  adapters = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), adapters)
  merged = lora.merge_lora(params, adapters, alpha=3.0, rank=2)
  out = params["layers"]["attention"]["out"]  # L x heads x kv x embed: in = heads * kv
  assert adapters["layers/attention/out"]["a"].shape == (2, 2 * 4, 2)
  assert adapters["layers/attention/out"]["b"].shape == (2, 2, 16)
  for l in range(CFG.num_layers):
    ab = adapters["layers/attention/out"]
    expected = np.asarray(out[l]) + 1.5 * (np.asarray(ab["a"][l]) @ np.asarray(ab["b"][l])
                                          ).reshape(2, 4, 16)
    np.testing.assert_allclose(merged["layers"]["attention"]["out"][l], expected, rtol=1e-5,
                               atol=1e-6)
  # Only the targets moved.
  np.testing.assert_array_equal(merged["layers"]["attention"]["query"],
                                params["layers"]["attention"]["query"])
  assert not np.array_equal(merged["layers"]["ffn"]["down"], params["layers"]["ffn"]["down"])


def test_bad_arguments_raise_errors_naming_them(params):
  with pytest.raises(ValueError, match="rank must be >= 1"):
    lora.init_lora(params, rank=0, key=jax.random.key(0))
  for alpha in (0.0, -16.0, float("nan")):
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
      lora.merge_lora(params, lora.init_lora(params, rank=2, key=jax.random.key(0)), alpha=alpha,
                      rank=2)
  with pytest.raises(ValueError, match="targets must be a non-empty subset"):
    lora.init_lora(params, rank=2, key=jax.random.key(0), targets=("embedding",))
  adapters = lora.init_lora(params, rank=2, key=jax.random.key(0), targets=("up",))
  with pytest.raises(ValueError, match="'layers/ffn/up' has no kernel"):
    lora.merge_lora({"embed": params["embed"]}, adapters, alpha=1.0, rank=2)
