"""Cached PRM scoring of growing sequences equals scoring each whole sequence from scratch."""

import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.prm import fit, scoring
from adaptive_jax.prm.cached_scoring import PrefixScorer

CFG = ModelConfig(vocab_size=259, num_layers=2, d_model=32, num_heads=4, head_dim=8,
                  d_ff_big=64, d_ff_small=0, max_len=48, duo=False, num_kv_heads=2)
LEVELS = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def params():
  params = fit.init_params(CFG, len(LEVELS), 8, seed=0)
  key = jax.random.key(1)  # nonzero calibration offsets: every column differs
  params["delta"] = jax.tree.map(lambda x: jax.random.normal(key, x.shape) * 0.3, params["delta"])
  params["base_gain"] = jnp.float32(0.2)
  return params


def _from_scratch(params, sequences):
  width = max(map(len, sequences))
  tokens_NxT = np.zeros((len(sequences), width), np.int32)
  for i, s in enumerate(sequences):
    tokens_NxT[i, :len(s)] = s
  probs_NxTxK = np.asarray(scoring.position_probabilities(
      params, tokens_NxT, model_cfg=CFG, num_quantiles=len(LEVELS)))
  return probs_NxTxK[np.arange(len(sequences)), [len(s) - 1 for s in sequences]]


def test_growing_beams_score_as_from_scratch(params):
  """Three rounds of a beam-search-like tree: every round extends earlier sequences by steps of
  different lengths (longer than a chunk too); scores equal the whole-sequence pass."""
  rng = np.random.default_rng(0)
  scorer = PrefixScorer(params, CFG, len(LEVELS), chunk=4, max_rows=4)
  pool = [[2] + list(rng.integers(3, 259, n)) for n in (2, 6, 9)]
  for round_ in range(3):
    got = scorer(pool)
    np.testing.assert_allclose(got, _from_scratch(params, pool), atol=2e-5)
    pool = [p + list(rng.integers(3, 259, rng.integers(1, 7))) for p in pool for _ in range(2)]
  # Later rounds ran only the new tokens: fewer real tokens than the pools held in all.
  assert scorer.tokens_real < sum(map(len, pool))


def test_repeated_and_cached_sequences_are_not_rerun(params):
  scorer = PrefixScorer(params, CFG, len(LEVELS), chunk=8)
  seq = [2, 40, 41, 42, 10]
  first = scorer([seq, seq])
  run = scorer.tokens_run
  np.testing.assert_allclose(scorer([seq]), first[:1])
  assert scorer.tokens_run == run
  np.testing.assert_allclose(first[0], first[1])


def test_a_sequence_ending_near_max_len_keeps_its_prefix(params):
  """The last chunk of a long sequence would overrun max_len slots; the scorer leaves room."""
  rng = np.random.default_rng(1)
  long = [2] + list(rng.integers(3, 259, CFG.max_len - 3))
  scorer = PrefixScorer(params, CFG, len(LEVELS), chunk=16)
  scorer([long])
  grown = [long + [7, 8]]
  np.testing.assert_allclose(scorer(grown), _from_scratch(params, grown), atol=2e-5)


@pytest.mark.parametrize("bad,match", [([[]], "sequence 0 has 0 tokens"),
                                       ([[2] * 49], "sequence 0 has 49 tokens.*max_len=48")])
def test_bad_sequences_raise(params, bad, match):
  with pytest.raises(ValueError, match=match):
    PrefixScorer(params, CFG, len(LEVELS))(bad)


def test_benchmark_checks_equal_beams_and_prints_its_ratio():
  out = subprocess.run(
      [sys.executable, "-m", "benchmarks.prm_scoring", "--questions=2", "--beams=2",
       "--expansions=2", "--steps=3", "--repeats=1"],
      capture_output=True, text=True, check=True, cwd=pathlib.Path(__file__).parents[1])
  last = out.stdout.strip().splitlines()[-1]
  assert re.fullmatch(r"cached_prm_scoring/full_rescoring = \d+\.\d{3}", last), last


@pytest.mark.parametrize("max_rows", [1, 64])
def test_a_new_sequence_that_prefixes_another_in_the_same_call(params, max_rows):
  """[a, a + 5 tokens] in one call: `a` is also their shared prefix, scored once, exactly."""
  rng = np.random.default_rng(2)
  a = [2] + list(rng.integers(3, 259, 9))
  pool = [a, a + list(rng.integers(3, 259, 5))]
  scorer = PrefixScorer(params, CFG, len(LEVELS), chunk=4, max_rows=max_rows)
  np.testing.assert_allclose(scorer(pool), _from_scratch(params, pool), atol=2e-5)
  held = sum(e.k_LxKxSxH.nbytes * 2 for e in scorer._entries.values())
  assert scorer._bytes == held
