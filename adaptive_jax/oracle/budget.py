"""Routing choices under a budget k = number of BIG layers, from a pattern loss matrix.

All functions take `loss_PxBxT` (per-token loss of each pattern, e.g. from
`pattern_tree.pattern_loss_matrix`) and `routes_PxL` (the patterns' routes) and consider only
the patterns with exactly k BIG layers (SKIP and SMALL both count as not big):

  oracle          per token, the best such pattern (the paper's oracle; not realizable, since
                  the token's context was computed under the same pattern)
  scheduled_oracle  the same with a budget that changes along the sequence (paper Fig. 4c)
  fixed           the one such pattern with the lowest mean loss over all tokens
  random_best_of  the best of `num` such patterns drawn uniformly with replacement

so mean(oracle) <= mean(fixed) <= mean(random_best_of) at every budget.
"""

import math

import numpy as np

from adaptive_jax import routing
from adaptive_jax.routing import Route
from adaptive_jax.typed_config import check_integer


def _check(loss_PxBxT, routes_PxL):
  loss, routes = np.asarray(loss_PxBxT), np.asarray(routes_PxL)
  if loss.ndim != 3 or not np.issubdtype(loss.dtype, np.floating):
    raise ValueError(f"loss_PxBxT must be a float [patterns, batch, tokens] array, "
                     f"got shape {loss.shape} dtype {loss.dtype}")
  if routes.ndim != 2 or routes.shape[0] != loss.shape[0]:
    raise ValueError(f"routes_PxL must have shape [patterns={loss.shape[0]}, num_layers] "
                     f"(one row per row of loss_PxBxT), got shape {routes.shape}")
  routing.validate_routes(routes[:, None], num_layers=routes.shape[1], name="routes_PxL")
  return loss, routes


def with_budget(routes_PxL, k) -> np.ndarray:
  """Indices of the patterns with exactly k BIG layers; ValueError if k is invalid or has none."""
  routes = np.asarray(routes_PxL)
  k = routing.validate_budget(k, num_layers=routes.shape[1])
  index_K = np.flatnonzero((routes == Route.BIG).sum(1) == k)
  if not len(index_K):
    raise ValueError(f"budget {k}: no pattern in routes_PxL has exactly {k} big layers")
  return index_K


def oracle(loss_PxBxT, routes_PxL, k) -> tuple[np.ndarray, np.ndarray]:
  """Per-token minimum over patterns with k big layers: (loss_BxT, pattern index_BxT)."""
  loss, routes = _check(loss_PxBxT, routes_PxL)
  index_K = with_budget(routes, k)
  best_BxT = np.argmin(loss[index_K], axis=0)
  index_BxT = index_K[best_BxT]
  return np.take_along_axis(loss, index_BxT[None], 0)[0], index_BxT


def scheduled_oracle(loss_PxBxT, routes_PxL, budget_T) -> tuple[np.ndarray, np.ndarray]:
  """`oracle` with a budget per position: token t may use budget_T[t] big layers."""
  loss, routes = _check(loss_PxBxT, routes_PxL)
  budget_T = np.asarray(budget_T)
  if budget_T.shape != loss.shape[2:]:
    raise ValueError(f"budget_T must have one budget per position, shape ({loss.shape[2]},), "
                     f"got shape {budget_T.shape}")
  loss_BxT = np.empty(loss.shape[1:], loss.dtype)
  index_BxT = np.empty(loss.shape[1:], np.int64)
  for k in np.unique(budget_T):
    at_T = budget_T == k
    loss_BxT[:, at_T], index_BxT[:, at_T] = oracle(loss[:, :, at_T], routes, int(k))
  return loss_BxT, index_BxT


def fixed(loss_PxBxT, routes_PxL, k) -> tuple[int, float]:
  """The single pattern with k big layers of lowest mean loss: (pattern index, mean loss)."""
  loss, routes = _check(loss_PxBxT, routes_PxL)
  index_K = with_budget(routes, k)
  mean_K = loss[index_K].mean(axis=(1, 2), dtype=np.float64)
  best = int(np.argmin(mean_K))
  return int(index_K[best]), float(mean_K[best])


def random_best_of(loss_PxBxT, routes_PxL, k, *, num: int = 100,
                   seed: int = 0) -> tuple[int, float]:
  """Best (lowest mean loss) of `num` patterns with k big layers drawn with replacement."""
  loss, routes = _check(loss_PxBxT, routes_PxL)
  num = check_integer("num", num)
  index_K = with_budget(routes, k)
  drawn = np.random.default_rng(seed).choice(index_K, size=num, replace=True)
  mean_N = loss[drawn].mean(axis=(1, 2), dtype=np.float64)
  best = int(np.argmin(mean_N))
  return int(drawn[best]), float(mean_N[best])


def layer_usage(routes_PxL, index_BxT, route) -> list[float]:
  """Fraction of tokens whose chosen pattern takes `route` at each layer, [L]."""
  chosen_NxL = np.asarray(routes_PxL)[np.asarray(index_BxT).ravel()]
  return (chosen_NxL == route).mean(axis=0).tolist()


def budget_table(loss_PxBxT, routes_PxL, budgets, seed: int = 0, num_random: int = 100) -> dict:
  """Per budget k: perplexities of oracle / fixed / random best-of-`num_random`, and the
  oracle's fraction of tokens taking BIG at each layer (paper Fig. 2)."""
  loss, routes = _check(loss_PxBxT, routes_PxL)
  table = {}
  for k in budgets:
    oracle_BxT, index_BxT = oracle(loss, routes, k)
    fixed_index, fixed_loss = fixed(loss, routes, k)
    random_index, random_loss = random_best_of(loss, routes, k, num=num_random, seed=seed)
    table[int(k)] = {
        "oracle_ppl": math.exp(float(oracle_BxT.mean(dtype=np.float64))),
        "fixed_ppl": math.exp(fixed_loss),
        "random_best_ppl": math.exp(random_loss),
        "fixed_pattern": int(fixed_index),
        "random_best_pattern": int(random_index),
        "oracle_big_by_layer": layer_usage(routes, index_BxT, Route.BIG),
    }
  return table
