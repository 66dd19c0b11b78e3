"""The int8 custom calls (nn/int8_matvec.cc) against float64 NumPy, and the model under
`int8_matvec="cpu"` against the same int8 model multiplied by XLA."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.nn import int8_matvec, quantize
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.kv_cache import KVCache, causal_access
from adaptive_jax.nn.transformer import Transformer


@pytest.mark.parametrize("rows, k, n", [(1, 64, 96), (3, 37, 130), (16, 576, 200)])
def test_kernels_equal_float64_numpy(rows, k, n):
  rng = np.random.default_rng(rows)
  x = rng.normal(size=(rows, k)).astype(np.float32)
  q_kn = rng.integers(-127, 128, (k, n)).astype(np.int8)
  q_nk = rng.integers(-127, 128, (n, k)).astype(np.int8)
  scale = rng.uniform(0.001, 0.02, n).astype(np.float32)
  kxn = jax.jit(int8_matvec.matvec_kxn)(x, q_kn, scale)
  nxk = jax.jit(int8_matvec.matvec_nxk)(x, q_nk, scale)
  assert kxn.shape == nxk.shape == (rows, n) and kxn.dtype == jnp.float32
  x64 = x.astype(np.float64)
  np.testing.assert_allclose(kxn, x64 @ q_kn * scale, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(nxk, x64 @ q_nk.T * scale, rtol=1e-5, atol=1e-5)


DENSE = ModelConfig(vocab_size=48, num_layers=2, d_model=32, num_heads=4, head_dim=8,
                    d_ff_big=40, d_ff_small=0, max_len=32, duo=False, num_kv_heads=2,
                    scale_embeddings=False, tie_embeddings=False, qkv_bias=True)
TOKENS_1xT = jax.random.randint(jax.random.key(0), (1, 12), 0, 48)


def _int8(cfg):
  params = jax.jit(lambda key: Transformer(cfg).init(key, TOKENS_1xT))(jax.random.key(1))
  params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape),
                        jax.tree.map(jnp.asarray, dict(params["params"])))
  return quantize.quantize_params(cfg, params)


def _decode(cfg, params):
  """Logits of a 6-token prefill (6 rows) and of six single-token steps (1 row each)."""
  model = Transformer(cfg)
  step = jax.jit(lambda p, t, c, a: model.apply({"params": p}, t, cache=c, cache_access=a,
                                                output="last_logits"))
  cache = KVCache.zeros(cfg, 1, TOKENS_1xT.shape[1])
  logits, cache = step(params, TOKENS_1xT[:, :6], cache, causal_access(0, 1, 6, cache.num_slots))
  out = [logits[0]]
  for t in range(6, TOKENS_1xT.shape[1]):
    logits, cache = step(params, TOKENS_1xT[:, t:t + 1], cache,
                         causal_access(jnp.asarray(t), 1, 1, cache.num_slots))
    out.append(logits[0])
  return np.stack(out)


@pytest.mark.parametrize("tied", [False, True], ids=["untied_gqa_bias", "tied"])
def test_cpu_matvec_model_equals_the_xla_int8_model(tied):
  cfg, params = _int8(dataclasses.replace(DENSE, tie_embeddings=tied))
  cpu = dataclasses.replace(cfg, int8_matvec="cpu")
  np.testing.assert_allclose(_decode(cpu, params), _decode(cfg, params), atol=1e-5)
  # A product of more rows than INT8_MATVEC_ROWS (2 x 12 tokens) takes the dequantizing path.
  tokens_2xT = jnp.concatenate([TOKENS_1xT, TOKENS_1xT[:, ::-1]])
  full = lambda c: jax.jit(lambda p, t: Transformer(c).apply({"params": p}, t))(params, tokens_2xT)
  np.testing.assert_allclose(full(cpu), full(cfg), atol=1e-5)


def test_cpu_matvec_needs_an_int8_dense_float32_model():
  with pytest.raises(ValueError, match=r"model.int8_matvec must be one of \('xla', 'cpu'\)"):
    dataclasses.replace(DENSE, int8_matvec="gpu")
  with pytest.raises(ValueError, match="model.int8_matvec='cpu' needs model.weight_quant='int8'"):
    dataclasses.replace(DENSE, int8_matvec="cpu")
  with pytest.raises(ValueError, match="duo=True"):
    ModelConfig(vocab_size=48, num_layers=2, d_model=32, num_heads=2, head_dim=16, d_ff_big=64,
                d_ff_small=8, max_len=32, weight_quant="int8", int8_matvec="cpu")


def test_a_missing_compiler_is_named(monkeypatch):
  monkeypatch.setenv("CXX", "no-such-compiler-xyz")
  with pytest.raises(RuntimeError, match="'no-such-compiler-xyz' is not on PATH .* int8_matvec='xla'"):
    int8_matvec._compiler()
