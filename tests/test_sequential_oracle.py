"""The context-consistent oracle against exhaustive search with the full (cache-free) model."""

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.oracle import sequential
from adaptive_jax.train.step import cross_entropy

CFG = ModelConfig(vocab_size=50, num_layers=3, d_model=16, num_heads=2, head_dim=8, d_ff_big=32,
                  d_ff_small=4, max_len=16)
B, T, L = 2, 6, CFG.num_layers
BUDGETS = (2, 0, 3, 1)  # out of order: outputs follow the order given
PATHS_PxL = np.array(list(itertools.product((routing.Route.SMALL, routing.Route.BIG), repeat=L)))


def _full_loss(params, tokens_BxT, targets_BxT, route_BxTxL):
  logits = Transformer(CFG).apply({"params": params}, tokens_BxT, route_BxTxL=route_BxTxL)
  return np.asarray(cross_entropy(logits, targets_BxT))


@pytest.fixture(scope="module")
def setup():
  tokens_BxTp1 = jax.random.randint(jax.random.key(1), (B, T + 1), 0, CFG.vocab_size)
  tokens_BxT, targets_BxT = tokens_BxTp1[:, :-1], tokens_BxTp1[:, 1:]
  params = nn.meta.unbox(Transformer(CFG).init(
      jax.random.key(0), tokens_BxT, route_BxTxL=jnp.ones((B, T, L), jnp.int32)))["params"]
  # Random (not 1.0) norm scales, so a wrong norm placement cannot hide.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x * (1 + 0.3 * jax.random.normal(jax.random.key(len(path)), x.shape))
      if "scale" in jax.tree_util.keystr(path) else x, params)
  route_KxBxTxL, loss_KxBxT = sequential.sequential_oracle(params, CFG, tokens_BxT, targets_BxT,
                                                           BUDGETS)
  return params, tokens_BxT, targets_BxT, np.asarray(route_KxBxTxL), np.asarray(loss_KxBxT)


@pytest.mark.parametrize("oracle", [sequential.sequential_oracle,
                                    sequential.naive_sequential_oracle])
def test_each_token_is_the_exhaustive_best_given_the_chosen_history(setup, oracle):
  params, tokens_BxT, targets_BxT, _, _ = setup
  route_KxBxTxL, loss_KxBxT = map(np.asarray, oracle(params, CFG, tokens_BxT, targets_BxT,
                                                     BUDGETS))
  k_n, p_n = len(BUDGETS), len(PATHS_PxL)
  # Candidate [K, t, P, B, T, L]: the oracle's history before t, path P at t, and random
  # routes (skips included) after t, which a causal model must ignore.
  cand = np.broadcast_to(route_KxBxTxL[:, None, None], (k_n, T, p_n, B, T, L)).copy()
  after = np.random.default_rng(0).integers(0, routing.NUM_ROUTES, cand.shape)
  for t in range(T):
    cand[:, t, :, :, t] = PATHS_PxL[None, :, None]
    cand[:, t, :, :, t + 1:] = after[:, t, :, :, t + 1:]
  tile = lambda a: np.broadcast_to(np.asarray(a), (k_n, T, p_n) + a.shape).reshape(-1, T)
  loss = _full_loss(params, tile(tokens_BxT), tile(targets_BxT), cand.reshape(-1, T, L))
  loss_KxTxPxB = loss.reshape(k_n, T, p_n, B, T)[:, np.arange(T), :, :, np.arange(T)]
  loss_KxTxPxB = np.moveaxis(loss_KxTxPxB, 0, 1)  # advanced indices moved to the front
  num_big_P = (PATHS_PxL == routing.Route.BIG).sum(1)
  for i, k in enumerate(BUDGETS):
    best_BxT = loss_KxTxPxB[i][:, num_big_P == k].min(1).T
    np.testing.assert_allclose(loss_KxBxT[i], best_BxT, atol=1e-5)
    code_BxT = ((route_KxBxTxL[i] == routing.Route.BIG) * 2 ** np.arange(L)[::-1]).sum(-1)
    chosen_BxT = np.take_along_axis(loss_KxTxPxB[i], code_BxT.T[:, None], axis=1)[:, 0].T
    np.testing.assert_allclose(chosen_BxT, best_BxT, atol=1e-5)


def test_routes_have_the_budget_and_replay_through_the_full_model(setup):
  params, tokens_BxT, targets_BxT, route_KxBxTxL, loss_KxBxT = setup
  assert route_KxBxTxL.shape == (len(BUDGETS), B, T, L) and route_KxBxTxL.dtype == np.int32
  assert loss_KxBxT.shape == (len(BUDGETS), B, T) and loss_KxBxT.dtype == np.float32
  assert set(np.unique(route_KxBxTxL)) <= {routing.Route.SMALL, routing.Route.BIG}
  for i, k in enumerate(BUDGETS):
    np.testing.assert_array_equal(routing.num_big(route_KxBxTxL[i]), k)
    np.testing.assert_allclose(_full_loss(params, tokens_BxT, targets_BxT, route_KxBxTxL[i]),
                               loss_KxBxT[i], atol=1e-5)


def test_extreme_budgets_are_all_small_and_all_big(setup):
  params, tokens_BxT, targets_BxT, _, loss_KxBxT = setup
  for route, k in ((routing.Route.SMALL, 0), (routing.Route.BIG, L)):
    expected = _full_loss(params, tokens_BxT, targets_BxT,
                          routing.constant_routes((B, T, L), route))
    np.testing.assert_allclose(loss_KxBxT[BUDGETS.index(k)], expected, atol=1e-5)


def test_tree_and_naive_choose_the_same_routes(setup):
  params, tokens_BxT, targets_BxT, route_KxBxTxL, loss_KxBxT = setup
  naive_route, naive_loss = sequential.naive_sequential_oracle(params, CFG, tokens_BxT,
                                                               targets_BxT, BUDGETS)
  np.testing.assert_array_equal(naive_route, route_KxBxTxL)
  np.testing.assert_allclose(naive_loss, loss_KxBxT, atol=1e-5)


@pytest.mark.parametrize("budgets, match", [((L + 1,), r"budgets\[0\]"), ((1, -1), r"budgets\[1\]"),
                                            ((1.5,), r"budgets\[0\]"), ((True,), r"budgets\[0\]"),
                                            ((), "non-empty"), (2, "non-empty")])
def test_bad_budgets_raise(setup, budgets, match):
  params, tokens_BxT, targets_BxT, _, _ = setup
  with pytest.raises(ValueError, match=match):
    sequential.sequential_oracle(params, CFG, tokens_BxT, targets_BxT, budgets)


@pytest.mark.parametrize("num_layers", [3, 6])
def test_evaluation_counts_are_the_distinct_prefixes(num_layers):
  n = num_layers
  full = sequential.evaluation_counts(n)
  assert full == {"attention": 2**n - 1, "ffn": 2**(n + 1) - 2, "logits": 2**n}
  assert sequential.evaluation_counts(n, share=False) == {"attention": n * 2**n,
                                                          "ffn": n * 2**n, "logits": 2**n}
  for k in range(n + 1):
    paths = [p for p in itertools.product((0, 1), repeat=n) if sum(p) == k]
    prefixes_by_depth = [len({p[:l] for p in paths}) for l in range(n + 1)]
    assert sequential.evaluation_counts(n, k) == {
        "attention": sum(prefixes_by_depth[:-1]), "ffn": sum(prefixes_by_depth[1:]),
        "logits": math.comb(n, k)}
    assert sequential.evaluation_counts(n, k, share=False) == {
        "attention": n * math.comb(n, k), "ffn": n * math.comb(n, k), "logits": math.comb(n, k)}
