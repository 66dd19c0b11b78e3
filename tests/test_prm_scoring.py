"""Per-position PRM scores in one pass equal the PRM run on each prefix cut at that position."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.prm import fit, scoring
from adaptive_jax.prm.model import PRM, encode_texts, probabilities

CFG = ModelConfig(vocab_size=259, num_layers=2, d_model=32, num_heads=2, head_dim=16,
                  d_ff_big=64, d_ff_small=0, max_len=32, duo=False)
TEXTS = ["ab\ncd\n", "Q: 3+4\n7\nanswer: 7\n", "x\n"]
LEVELS = (0.1, 0.5, 0.9)


def _calibrated_params():
  params = fit.init_params(CFG, len(LEVELS), 8, seed=0)
  # Nonzero calibration offsets, so quantiles, mean and base all differ.
  key = jax.random.key(1)
  params["delta"] = jax.tree.map(lambda x: jax.random.normal(key, x.shape) * 0.3, params["delta"])
  params["base_gain"] = jnp.float32(0.2)
  return params


def test_every_position_equals_the_prefix_alone():
  params = _calibrated_params()
  tokens_BxT = encode_texts(TEXTS, CFG.max_len)
  probs_BxTxK = np.asarray(scoring.position_probabilities(
      params, tokens_BxT, model_cfg=CFG, num_quantiles=len(LEVELS)))
  cols = scoring.columns(LEVELS)
  module = PRM(CFG, len(LEVELS))
  cuts = [(b, t) for b, text in enumerate(TEXTS) for t in range(1, len(text) + 1)]
  prefixes_NxT = encode_texts([TEXTS[b][:t] for b, t in cuts], CFG.max_len)  # right-padded
  expected_NxK = np.asarray(probabilities(jax.jit(module.apply)({"params": params},
                                                                prefixes_NxT)))
  base_N = jax.nn.sigmoid(jax.jit(lambda p, x: module.apply(
      {"params": p}, x, method=lambda m, x: m.head(m.readout(x))))(params, prefixes_NxT)[:, 0])
  # Position t of a row holds the t-th text byte (position 0 is the eos).
  got_NxK = np.stack([probs_BxTxK[b, t] for b, t in cuts])
  np.testing.assert_allclose(got_NxK[:, :cols[scoring.BASE]], expected_NxK, atol=1e-5)
  np.testing.assert_allclose(got_NxK[:, cols[scoring.BASE]], base_N, atol=1e-5)


def test_columns_name_the_outputs():
  assert scoring.columns(LEVELS) == {"q0.1": 0, "q0.5": 1, "q0.9": 2, "mean": 3, "base": 4}


def test_sequences_longer_than_the_prm_are_rejected():
  tokens_BxT = np.zeros((2, CFG.max_len + 1), np.int32)
  with pytest.raises(ValueError, match="max_len=32"):
    scoring.position_probabilities(_calibrated_params(), tokens_BxT, model_cfg=CFG,
                                   num_quantiles=len(LEVELS))
