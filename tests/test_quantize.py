"""Weight-only int8 (nn/quantize.py): the int8 model is the float model with its weights
rounded to q * scale, on every path (full forward, Duo routes, cached decode), and a quarter of
the kernel bytes."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax import routing
from adaptive_jax.nn import lora, quantize
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.kv_cache import KVCache, causal_access
from adaptive_jax.nn.transformer import Transformer

DENSE = ModelConfig(vocab_size=48, num_layers=2, d_model=32, num_heads=4, head_dim=8,
                    d_ff_big=40, d_ff_small=0, max_len=32, duo=False, num_kv_heads=2,
                    scale_embeddings=False, tie_embeddings=False, qkv_bias=True)
DUO = ModelConfig(vocab_size=48, num_layers=2, d_model=32, num_heads=2, head_dim=16,
                  d_ff_big=64, d_ff_small=8, max_len=32)
TOKENS_BxT = jax.random.randint(jax.random.key(0), (2, 12), 0, 48)


def _forward(cfg, params, **kwargs):
  """Logits of the model, compiled once per call (not op by op)."""
  return jax.jit(lambda p, t, kw: Transformer(cfg).apply({"params": p}, t, **kw))(
      params, TOKENS_BxT, kwargs)


def _params(cfg, **kwargs):
  params = jax.jit(lambda key, t, kw: Transformer(cfg).init(key, t, **kw))(
      jax.random.key(1), TOKENS_BxT, kwargs)["params"]
  # Norm scales and biases off their init, so every param matters.
  return jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape),
                      nn.meta.unbox(params))


def _dequantized(qparams):
  """The float params the int8 model computes with: q * scale, by a plain tree walk."""
  out = {}
  for key, value in qparams.items():
    if isinstance(value, dict):
      out[key] = _dequantized(value)
    elif not key.endswith(quantize.SCALE):
      scale = qparams.get(key + quantize.SCALE)
      out[key] = value if scale is None else value.astype(jnp.float32) * scale
  return out


def test_quantize_int8_by_hand():
  w = np.array([[1.0, -2.0], [0.5, 4.0], [0.0, 0.0]])
  q, scale = quantize.quantize_int8(w, (0,))  # one scale per column (output channel)
  np.testing.assert_allclose(scale, [[1 / 127, 4 / 127]], rtol=1e-7)
  # 0.5 * 127 = 63.5 and -2 * 127 / 4 = -63.5 round half to even.
  np.testing.assert_array_equal(q, [[127, -64], [64, 127], [0, 0]])
  assert q.dtype == np.int8 and scale.dtype == np.float32
  # A zero channel keeps scale 1 and dequantizes to zero.
  q0, s0 = quantize.quantize_int8(np.zeros((3, 2)), (0,))
  assert (q0 == 0).all() and (s0 == 1).all()


def test_rounding_error_is_at_most_half_a_step():
  w = np.asarray(jax.random.normal(jax.random.key(3), (16, 4, 8)))
  q, scale = quantize.quantize_int8(w, (0,))
  assert scale.shape == (1, 4, 8)
  assert (np.abs(q * scale - w) <= scale / 2 + 1e-7).all()
  assert np.abs(q).max() == 127


@pytest.mark.parametrize("cfg", [DENSE, DUO], ids=["dense_gqa_untied_bias", "duo_tied"])
def test_int8_model_is_the_float_model_on_its_rounded_weights(cfg):
  kwargs = {}
  if cfg.duo:
    kwargs["route_BxTxL"] = routing.random_routes(jax.random.key(4), (2, 12, cfg.num_layers),
                                                  p_big=0.5)
  params = _params(cfg, **kwargs)
  qcfg, qparams = quantize.quantize_params(cfg, params)
  assert qcfg.weight_quant == "int8" and dataclasses.replace(qcfg, weight_quant="none") == cfg
  # Exactly the tree the int8 model initializes.
  init = nn.meta.unbox(jax.eval_shape(lambda: Transformer(qcfg).init(
      jax.random.key(1), TOKENS_BxT, **kwargs))["params"])
  shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)
  assert shapes(init) == shapes(qparams)

  logits = _forward(qcfg, qparams, **kwargs)
  reference = _forward(cfg, _dequantized(qparams), **kwargs)
  np.testing.assert_allclose(logits, reference, atol=1e-5)
  # ... and near the unrounded model (8 bits per weight; measured 2% of the largest logit on
  # these 32-wide layers; SmolLM2's held-out perplexity is docs/pretrained.md's measure).
  original = _forward(cfg, params, **kwargs)
  assert np.abs(logits - original).max() <= 0.05 * np.abs(original).max()

  float_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  int8_bytes = sum(x.nbytes for x in jax.tree.leaves(qparams))
  assert int8_bytes < 0.3 * float_bytes


def test_int8_cached_decode_equals_its_full_forward():
  qcfg, qparams = quantize.quantize_params(DENSE, _params(DENSE))
  model, tokens_1xT = Transformer(qcfg), TOKENS_BxT[:1]
  full_TxV = _forward(qcfg, qparams)[0]
  cache = KVCache.zeros(qcfg, 1, tokens_1xT.shape[1])
  step = jax.jit(lambda p, t, c, a: model.apply({"params": p}, t, cache=c, cache_access=a,
                                                output="last_logits"))
  logits_1xV, cache = step(qparams, tokens_1xT[:, :6], cache,
                           causal_access(0, 1, 6, cache.num_slots))
  steps = [logits_1xV[0]]
  for t in range(6, tokens_1xT.shape[1]):
    access = causal_access(jnp.asarray(t), 1, 1, cache.num_slots)
    logits_1xV, cache = step(qparams, tokens_1xT[:, t:t + 1], cache, access)
    steps.append(logits_1xV[0])
  np.testing.assert_allclose(np.stack(steps), full_TxV[5:], atol=1e-5)


def test_bad_quantization_inputs_are_named():
  with pytest.raises(ValueError, match=r"model.weight_quant must be one of \('none', 'int8'\)"):
    dataclasses.replace(DENSE, weight_quant="int4")
  qcfg, qparams = quantize.quantize_params(DENSE, _params(DENSE))
  with pytest.raises(ValueError, match="quantize_params takes a float model"):
    quantize.quantize_params(qcfg, qparams)
  with pytest.raises(ValueError, match="lora target layers/attention/query is int8"):
    lora.init_lora(qparams, rank=2, key=jax.random.key(0), targets=("query",))


def test_convert_weights_gives_each_format():
  params = _params(DENSE)
  cfg16, params16 = quantize.convert_weights(DENSE, params, "bfloat16")
  assert cfg16.dtype == cfg16.param_dtype == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(params16)} == {jnp.dtype(jnp.bfloat16)}
  logits16, logits = _forward(cfg16, params16), _forward(DENSE, params)
  assert logits16.dtype == jnp.float32
  assert np.abs(logits16 - logits).max() <= 0.05 * np.abs(logits).max()
  cfg8, _ = quantize.convert_weights(DENSE, params, "int8")
  assert cfg8.weight_quant == "int8"
  assert quantize.convert_weights(DENSE, params, "float32")[0] == DENSE
  with pytest.raises(ValueError, match=r"--weights must be one of \('float32', 'bfloat16', "
                                       r"'int8'\), got 'fp8'"):
    quantize.convert_weights(DENSE, params, "fp8", "--weights")
