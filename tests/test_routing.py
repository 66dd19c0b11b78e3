"""Route ids, budgets, random routes and FLOP costs against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax import routing
from adaptive_jax.routing import Route


def test_route_ids_are_fixed():
  assert (Route.SKIP, Route.SMALL, Route.BIG) == (0, 1, 2)


def test_num_big_counts_big_layers_per_token():
  route = jnp.array([[[2, 1, 0, 2], [1, 1, 1, 1]]])
  np.testing.assert_array_equal(routing.num_big(route), [[2, 0]])


def test_random_routes_frequencies():
  route = routing.random_routes(jax.random.key(0), (64, 64, 12), p_big=0.25, p_skip=0.15)
  assert route.dtype == jnp.int32
  counts = np.bincount(np.asarray(route).ravel(), minlength=3) / route.size
  np.testing.assert_allclose(counts, [0.15, 0.60, 0.25], atol=0.01)


def test_random_routes_extremes_are_constant():
  key = jax.random.key(1)
  assert np.all(np.asarray(routing.random_routes(key, (2, 3, 4), p_big=1.0)) == Route.BIG)
  assert np.all(np.asarray(routing.random_routes(key, (2, 3, 4), p_big=0.0)) == Route.SMALL)


@pytest.mark.parametrize("p_big, p_skip, message", [
    (1.5, 0.0, "p_big must be a probability"),
    (-0.1, 0.0, "p_big must be a probability"),
    (0.5, 0.7, "p_big \\+ p_skip must be <= 1"),
    ("0.5", 0.0, "p_big must be a probability"),
])
def test_random_routes_rejects_bad_probabilities(p_big, p_skip, message):
  with pytest.raises(ValueError, match=message):
    routing.random_routes(jax.random.key(0), (1, 1, 1), p_big=p_big, p_skip=p_skip)


@pytest.mark.parametrize("budget", [0, 6, 12, np.int64(3)])
def test_validate_budget_accepts_integers_in_range(budget):
  assert routing.validate_budget(budget, num_layers=12) == int(budget)


@pytest.mark.parametrize("budget, message", [
    (13, r"budget must be in \[0, 12\]"), (-1, r"budget must be in \[0, 12\]"),
    (2.5, "integer number of big layers"), (True, "integer number of big layers"),
    (None, "integer number of big layers")])
def test_validate_budget_rejects(budget, message):
  with pytest.raises(ValueError, match=message):
    routing.validate_budget(budget, num_layers=12)


def test_validate_routes_reports_index_of_first_bad_value():
  route = np.ones((1, 3, 2), np.int32)
  route[0, 2, 1] = 5
  with pytest.raises(ValueError, match=r"got 5 at index \(0, 2, 1\)"):
    routing.validate_routes(route, num_layers=2)


def test_validate_routes_shape_and_dtype():
  with pytest.raises(ValueError, match="shape"):
    routing.validate_routes(np.ones((3, 2), np.int32), num_layers=2)
  with pytest.raises(ValueError, match="integer dtype"):
    routing.validate_routes(np.ones((1, 3, 2), np.float32), num_layers=2)


def test_flop_model_hand_computed():
  flops = routing.FlopModel(d_model=4, d_ff_small=2, d_ff_big=8, context=3)
  assert flops.ffn(Route.SKIP) == 0
  assert flops.ffn(Route.SMALL) == 6 * 4 * 2
  assert flops.ffn(Route.BIG) == 6 * 4 * 8
  assert flops.attention() == 8 * 16 + 4 * 3 * 4
  route = np.array([[[2, 1], [0, 0]]])
  np.testing.assert_array_equal(
      flops.route_flops(route), [[2 * 176 + 192 + 48, 2 * 176]])
  assert flops.masked_dense_flops(2) == 2 * (176 + 48 + 192)
