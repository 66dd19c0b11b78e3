"""The KV-cache sampler against a naive sampler that reruns the full model on every prefix."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.sampler import decode

CFG = ModelConfig(vocab_size=32, num_layers=2, d_model=16, num_heads=2, head_dim=8, d_ff_big=32,
                  d_ff_small=8, max_len=32, duo=False)
PROMPTS = [[1, 5, 9, 4, 7], [1, 3], [1, 8, 8, 2, 6, 6, 30], [1, 12, 17]]
M = 10
GREEDY = decode.DecodeConfig(max_new_tokens=M, policy=decode.SamplingPolicy(temperature=0.0))
NUCLEUS = decode.DecodeConfig(max_new_tokens=M, policy=decode.SamplingPolicy(0.8, top_p=0.9))


def _params(cfg):
  tokens = jnp.zeros((1, 4), jnp.int32)
  route = jnp.ones((1, 4, cfg.num_layers), jnp.int32) if cfg.duo else None
  return nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), tokens, route))["params"]


@pytest.fixture(scope="module")
def params():
  return _params(CFG)


def _sample(params, prompts, dec, cfg=CFG, key=jax.random.key(7)):
  prompt_BxP, prompt_len_B = decode.left_pad(prompts)
  key_B = jax.random.split(key, len(prompts))
  out = decode.sample(params, prompt_BxP, prompt_len_B, key_B, cfg=cfg, dec=dec)
  return jax.tree.map(np.asarray, out)


def _naive_sample(params, prompts, dec, cfg=CFG, key=jax.random.key(7)):
  """Per step: the full model on every whole prefix (right-padded, causal), no cache."""
  key_B = jax.random.split(key, len(prompts))
  width = max(map(len, prompts)) + dec.max_new_tokens
  route = None if not cfg.duo else jnp.full((len(prompts), width, cfg.num_layers), dec.route)
  full = jax.jit(lambda p, t: Transformer(cfg).apply({"params": p}, t, route))
  seqs = [list(p) for p in prompts]
  done = [False] * len(prompts)
  tokens = np.full((len(prompts), dec.max_new_tokens), dec.pad_id)
  logprobs = np.zeros((len(prompts), dec.max_new_tokens), np.float32)
  for t in range(dec.max_new_tokens):
    buffer = np.array([s + [0] * (width - len(s)) for s in seqs])
    logits_BxTxV = full(params, buffer)
    for b, s in enumerate(seqs):
      if done[b]:
        continue
      logits_1xV = logits_BxTxV[b, len(s) - 1][None]
      token = int(dec.policy.choose(jax.random.fold_in(key_B[b], len(s))[None], logits_1xV)[0])
      tokens[b, t] = token
      logprobs[b, t] = jax.nn.log_softmax(logits_1xV[0])[token]
      s.append(token)
      done[b] = token in dec.stop_tokens
  return tokens, logprobs


@pytest.mark.parametrize("dec", [GREEDY, dataclasses.replace(NUCLEUS, stop_tokens=(3, 11))],
                         ids=["greedy", "top_p_with_stops"])
def test_sampler_equals_naive_full_recompute(params, dec):
  out = _sample(params, PROMPTS, dec)
  tokens, logprobs = _naive_sample(params, PROMPTS, dec)
  np.testing.assert_array_equal(out.tokens_BxM, tokens)
  np.testing.assert_allclose(out.logprobs_BxM, logprobs, atol=1e-4)


def test_stops_are_per_sequence(params):
  free = _sample(params, PROMPTS, NUCLEUS).tokens_BxM
  # A stop token that some sequences draw early and others never draw.
  stop = next(int(tok) for tok in free[0, :3] if not (free == tok).any(axis=1).all())
  out = _sample(params, PROMPTS, dataclasses.replace(NUCLEUS, stop_tokens=(stop,)))
  for b in range(len(PROMPTS)):
    hits = np.flatnonzero(free[b] == stop)
    length = hits[0] + 1 if hits.size else M
    assert out.lengths_B[b] == length
    np.testing.assert_array_equal(out.tokens_BxM[b, :length], free[b, :length])
    assert (out.tokens_BxM[b, length:] == NUCLEUS.pad_id).all()
    assert (out.logprobs_BxM[b, length:] == 0).all()
  assert out.lengths_B.min() < M and out.lengths_B.max() == M


def test_never_exceeds_token_limit(params):
  for m in (1, 4):
    out = _sample(params, PROMPTS, dataclasses.replace(NUCLEUS, max_new_tokens=m))
    assert out.tokens_BxM.shape == (len(PROMPTS), m)
    np.testing.assert_array_equal(out.lengths_B, m)
  every_token = dataclasses.replace(NUCLEUS, stop_tokens=tuple(range(CFG.vocab_size)))
  np.testing.assert_array_equal(_sample(params, PROMPTS, every_token).lengths_B, 1)


def test_continuing_from_own_prefix_equals_sampling_from_scratch(params):
  scratch = _sample(params, PROMPTS, NUCLEUS).tokens_BxM
  cut = [2, 5, 0, 7]  # new tokens kept per sequence
  prefixes = [p + scratch[b, :cut[b]].tolist() for b, p in enumerate(PROMPTS)]
  continued = _sample(params, prefixes, NUCLEUS).tokens_BxM
  for b, c in enumerate(cut):
    np.testing.assert_array_equal(continued[b, :M - c], scratch[b, c:])


def test_shared_prefix_cache_equals_sampling_without_it(params):
  # L = 3, P = 9: pads 0 and 2 (< L, the prefix partly from the cache), 3 and 5 (>= L: slots
  # 0..L-1 are all pads and the row reruns its whole prefix); the last row is prefix + 1 token.
  prefix = [1, 5, 9]
  prompts = [prefix + [4, 7, 2, 6, 6, 30], prefix + [12, 17, 8, 3], prefix + [20, 21, 22],
             prefix + [13]]
  prompt_BxP, prompt_len_B = decode.left_pad(prompts)
  assert (prompt_BxP.shape[1] - prompt_len_B).tolist() == [0, 2, 3, 5]
  key_B = jax.random.split(jax.random.key(7), len(prompts))
  prefix_cache = decode.prefill_prefix(CFG, NUCLEUS, params, np.asarray(prefix))
  shared = decode.sample(params, prompt_BxP, prompt_len_B, key_B, prefix_cache=prefix_cache,
                         cfg=CFG, dec=NUCLEUS)
  shared, full = jax.tree.map(np.asarray, (shared, _sample(params, prompts, NUCLEUS)))
  np.testing.assert_array_equal(shared.tokens_BxM, full.tokens_BxM)
  np.testing.assert_array_equal(shared.lengths_B, full.lengths_B)
  np.testing.assert_allclose(shared.logprobs_BxM, full.logprobs_BxM, atol=1e-5)
  np.testing.assert_allclose(shared.confidence_BxM, full.confidence_BxM, atol=1e-5)


def test_shared_prefix_as_long_as_the_prompt_is_rejected(params):
  prompt_BxP, prompt_len_B = decode.left_pad([[1, 5, 9], [1, 5, 9]])
  prefix_cache = decode.prefill_prefix(CFG, NUCLEUS, params, np.array([1, 5, 9]))
  with pytest.raises(ValueError, match="shared prefix of 3 tokens needs prompts longer"):
    decode.sample(params, prompt_BxP, prompt_len_B, jax.random.split(jax.random.key(1), 2),
                  prefix_cache=prefix_cache, cfg=CFG, dec=NUCLEUS)


@pytest.mark.parametrize("prompts", [[[1, 5, 9, 4], [1, 5, 8, 4]],  # row 1 differs inside it
                                     [[1, 5, 9, 4, 4], [1, 5, 9]]])  # row 1 is the prefix alone
def test_rows_that_do_not_extend_the_shared_prefix_are_rejected(params, prompts):
  prompt_BxP, prompt_len_B = decode.left_pad(prompts)
  prefix_cache = decode.prefill_prefix(CFG, NUCLEUS, params, np.array([1, 5, 9]))
  with pytest.raises(ValueError, match="prompt row 1 does not start with the 3-token"):
    decode.sample(params, prompt_BxP, prompt_len_B, jax.random.split(jax.random.key(1), 2),
                  prefix_cache=prefix_cache, cfg=CFG, dec=NUCLEUS)


def test_duo_model_with_constant_route_equals_naive():
  cfg = dataclasses.replace(CFG, duo=True)
  dec = dataclasses.replace(GREEDY, max_new_tokens=4, route=int(routing.Route.SMALL))
  params = _params(cfg)
  out = _sample(params, PROMPTS, dec, cfg)
  np.testing.assert_array_equal(out.tokens_BxM, _naive_sample(params, PROMPTS, dec, cfg)[0])


def test_top_p_draws_only_from_the_nucleus():
  logits_BxV = jnp.tile(jnp.array([[3.0, 2.0, 1.0, 0.0]]), (400, 1))  # p = .64 .24 .09 .03
  key_B = jax.random.split(jax.random.key(0), 400)
  draw = lambda policy: set(np.asarray(policy.choose(key_B, logits_BxV)).tolist())
  assert draw(decode.SamplingPolicy(1.0, top_p=0.7)) == {0, 1}
  assert draw(decode.SamplingPolicy(1.0, top_p=0.5)) == {0}
  assert draw(decode.SamplingPolicy(1.0)) == {0, 1, 2, 3}


def test_nucleus_equals_sorted_reference():
  logits_BxV = 3 * jax.random.normal(jax.random.key(1), (64, 50))
  probs_BxV = np.asarray(jax.nn.softmax(logits_BxV), np.float64)
  for top_p in (0.05, 0.5, 0.9, 0.99):
    order_BxV = np.argsort(-probs_BxV, axis=-1)
    sorted_BxV = np.take_along_axis(probs_BxV, order_BxV, -1)
    kept_sorted_BxV = np.cumsum(sorted_BxV, -1) - sorted_BxV < top_p  # mass above it < top_p
    expected_BxV = np.zeros_like(kept_sorted_BxV)
    np.put_along_axis(expected_BxV, order_BxV, kept_sorted_BxV, -1)
    kept_BxV = decode._nucleus(jax.nn.softmax(logits_BxV), top_p)
    np.testing.assert_array_equal(np.asarray(kept_BxV), expected_BxV)


def test_sampler_rejects_decodes_longer_than_the_context():
  cfg = ModelConfig(vocab_size=16, num_layers=1, d_model=8, num_heads=1, head_dim=8,
                    d_ff_big=16, d_ff_small=4, max_len=8, duo=False)
  params = Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  prompt_BxP, prompt_len_B = decode.left_pad([[1, 2, 3, 4]])
  with pytest.raises(ValueError, match="exceeds model.max_len=8"):
    decode.sample(params, prompt_BxP, prompt_len_B, jax.random.split(jax.random.key(1), 1),
                  cfg=cfg, dec=decode.DecodeConfig(max_new_tokens=6))
