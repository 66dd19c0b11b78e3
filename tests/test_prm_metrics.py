"""Brier, ECE, reliability curves, quantile coverage and pinball loss against hand-worked values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax import prm

# Four predictions against Monte-Carlo success rates, used by several tests.
P = [0.1, 0.3, 0.6, 0.9]
Y = [0.0, 0.5, 1.0, 1.0]


def test_brier_hand_computed():
  # (0.1-0)^2 + (0.3-0.5)^2 + (0.6-1)^2 + (0.9-1)^2 = 0.01 + 0.04 + 0.16 + 0.01 = 0.22; / 4
  assert prm.brier(P, Y) == pytest.approx(0.055)
  assert prm.brier([0.0, 1.0], [0.0, 1.0]) == 0.0


def test_ece_two_bins_hand_computed():
  # bin [0, .5): p {.1, .3} mean .2, y {0, .5} mean .25 -> |.2 - .25| = .05, weight 2/4
  # bin [.5, 1]: p {.6, .9} mean .75, y {1, 1} mean 1 -> .25, weight 2/4
  # ECE = .5 * .05 + .5 * .25 = .15
  assert prm.ece(P, Y, num_bins=2) == pytest.approx(0.15)
  # Weighted by count: p {.1, .2, .3} vs y 0 -> |.2 - 0| * 3/4; p {.8} vs 0 -> .8 * 1/4; sum .35
  assert prm.ece([0.1, 0.2, 0.3, 0.8], [0, 0, 0, 0], num_bins=2) == pytest.approx(0.35)


def test_ece_ten_bins_is_mean_abs_error_when_every_point_has_its_own_bin():
  # each point alone: (|.1-0| + |.3-.5| + |.6-1| + |.9-1|) / 4 = (.1 + .2 + .4 + .1) / 4 = .2
  assert prm.ece(P, Y) == pytest.approx(0.2)


def test_ece_is_zero_when_calibrated_in_every_bin():
  assert prm.ece([0.2, 0.2, 0.8, 0.8], [0.0, 0.4, 1.0, 0.6], num_bins=5) == pytest.approx(0.0)


def test_reliability_curve_bins_and_empty_bins():
  mean_p, mean_y, counts = prm.reliability_curve([0.05, 0.15, 0.25, 0.5, 1.0], [0, 1, 1, 0, 1], 4)
  # bins [0,.25) {.05,.15}, [.25,.5) {.25}, [.5,.75) {.5}, [.75,1] {1.0}: p = k/B goes up a bin
  np.testing.assert_array_equal(counts, [2, 1, 1, 1])
  np.testing.assert_allclose(mean_p, [0.1, 0.25, 0.5, 1.0])
  np.testing.assert_allclose(mean_y, [0.5, 1.0, 0.0, 1.0])
  mean_p, mean_y, counts = prm.reliability_curve([0.05, 0.95], [0, 1], 3)
  np.testing.assert_array_equal(counts, [1, 0, 1])
  assert np.isnan(mean_p[1]) and np.isnan(mean_y[1])


def test_quantile_coverage_one_sided():
  y = [0.0, 0.25, 0.5, 0.75, 1.0]
  # y <= 0.5 for 3 of 5 (ties count as covered)
  assert prm.quantile_coverage([0.5] * 5, y) == pytest.approx(0.6)
  q = np.array([[0.1, 0.5, 0.9]] * 5)
  # per level: y <= .1 -> 1/5, y <= .5 -> 3/5, y <= .9 -> 4/5
  np.testing.assert_allclose(prm.quantile_coverage(q, y), [0.2, 0.6, 0.8])


def test_pinball_loss_hand_computed():
  q = jnp.array([[0.2, 0.5, 0.8], [0.2, 0.5, 0.8]])
  y = jnp.array([0.6, 0.0])
  levels = (0.1, 0.5, 0.9)
  # row 1, u = y - q = (.4, .1, -.2): .1*.4 = .04, .5*.1 = .05, (.9-1)*(-.2) = .02
  # row 2, u = (-.2, -.5, -.8): .9*.2 = .18, .5*.5 = .25, .1*.8 = .08
  # mean over 6 = (.04 + .05 + .02 + .18 + .25 + .08) / 6 = .62 / 6
  assert float(prm.pinball_loss(q, y, levels)) == pytest.approx(0.62 / 6, rel=1e-6)


def test_pinball_loss_gradient_and_jit():
  q = jnp.array([[0.2, 0.5, 0.8], [0.2, 0.5, 0.8]])
  y = jnp.array([0.6, 0.0])
  levels = jnp.array([0.1, 0.5, 0.9])
  grad = jax.jit(jax.grad(prm.pinball_loss))(q, y, levels)
  # d/dq = -tau where y > q, 1 - tau where y < q; divided by N * Q = 6
  expected = np.array([[-0.1, -0.5, 0.1], [0.9, 0.5, 0.1]]) / 6
  np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_pinball_loss_minimized_at_the_empirical_quantile():
  y = jnp.asarray(np.random.default_rng(0).uniform(size=2001))
  grid = jnp.linspace(0, 1, 201)
  losses = jax.vmap(lambda c: prm.pinball_loss(jnp.full((y.size, 1), c), y, (0.1,)))(grid)
  assert float(grid[jnp.argmin(losses)]) == pytest.approx(float(np.quantile(y, 0.1)), abs=0.006)


def test_per_bucket():
  out = prm.per_bucket(prm.brier, P, Y, buckets=[2, 1, 2, 1])
  # bucket 1: (.3-.5)^2, (.9-1)^2 -> (.04 + .01) / 2; bucket 2: (.01 + .16) / 2
  assert list(out) == [1, 2]
  assert out[1] == pytest.approx(0.025) and out[2] == pytest.approx(0.085)


def test_brier_ratio_point_value_is_the_ratio_of_the_scores():
  out = prm.brier_ratio(P, [0.2, 0.5, 0.5, 0.5], Y, groups=[0, 0, 1, 1])
  # a: (.01 + .04 + .16 + .01) / 4 = .055; b: (.04 + 0 + .25 + .25) / 4 = .135
  assert out["ratio"] == pytest.approx(0.055 / 0.135)
  assert out["low"] <= out["ratio"] <= out["high"]
  one_group = prm.brier_ratio(P, [0.2, 0.5, 0.5, 0.5], Y, groups=[7, 7, 7, 7])
  assert one_group == {"ratio": pytest.approx(0.055 / 0.135), "low": None, "high": None}


def test_brier_ratio_resamples_whole_groups():
  """Records within a group are copies: the interval must be that of one record per group
  (brute-force loop over group resamples), not the narrower one of independent records."""
  rng = np.random.default_rng(0)
  y_G = rng.random(30)
  p_a_G = np.clip(y_G + 0.2 * rng.standard_normal(30), 0, 1)
  p_b_G = np.clip(y_G + 0.3 * rng.standard_normal(30), 0, 1)
  copies = lambda x_G: np.repeat(x_G, 10)
  out = prm.brier_ratio(copies(p_a_G), copies(p_b_G), copies(y_G), np.repeat(np.arange(30), 10),
                        num_resamples=4000)
  err_a_G, err_b_G = (p_a_G - y_G) ** 2, (p_b_G - y_G) ** 2
  draws_RxG = rng.integers(0, 30, (4000, 30))
  ratios_R = err_a_G[draws_RxG].sum(1) / err_b_G[draws_RxG].sum(1)
  low, high = np.percentile(ratios_R, [5, 95])
  width = high - low
  assert out["ratio"] == pytest.approx(err_a_G.sum() / err_b_G.sum())
  assert abs(out["low"] - low) < 0.15 * width and abs(out["high"] - high) < 0.15 * width
  # Treating the 300 records as independent would shrink the interval about sqrt(10)-fold.
  record_draws = rng.integers(0, 300, (4000, 300))
  record_ratios = (copies(err_a_G)[record_draws].sum(1) / copies(err_b_G)[record_draws].sum(1))
  assert np.subtract(*np.percentile(record_ratios, [95, 5])) < 0.5 * (out["high"] - out["low"])


@pytest.mark.parametrize("fn, args, message", [
    (prm.brier, ([0.5, 1.2], [0, 1]), "p must be probabilities in \\[0, 1\\]"),
    (prm.brier, ([0.5, 0.2], [0, np.nan]), "y must be probabilities in \\[0, 1\\]"),
    (prm.brier, ([0.5, 0.2], [0, 1, 1]), "p and y must have the same shape"),
    (prm.brier, ([], []), "p must be non-empty"),
    (prm.ece, ([0.5], [1.0], 0), "num_bins must be an integer >= 1"),
    (prm.reliability_curve, ([-0.1], [1.0], 5), "p must be probabilities"),
    (prm.quantile_coverage, ([0.5, 0.5], [0.0]), "q_pred must have shape"),
    (prm.quantile_coverage, ([0.5, 2.0], [0.0, 1.0]), "q_pred must be probabilities"),
    (prm.pinball_loss, (jnp.zeros((2, 3)), jnp.zeros(2), (0.1, 0.5)), "levels_Q must have shapes"),
    (prm.pinball_loss, (jnp.zeros((2, 2)), jnp.zeros(2), (0.0, 0.5)), "levels_Q must be quantile"),
    (prm.pinball_loss, (jnp.zeros((2, 1)), jnp.array([0.0, 1.5]), (0.5,)), "y_N must be prob"),
    (prm.per_bucket, (prm.brier, [0.5], [1.0], [1, 2]), "buckets must have shape"),
    (prm.brier_ratio, ([0.5], [0.5], [1.0], [1, 2]), "groups must have shape"),
    (prm.brier_ratio, ([0.5], [1.5], [1.0], [1]), "p_b must be probabilities"),
    (prm.brier_ratio, ([0.5], [1.0], [1.0], [1]), "brier\\(p_b, y\\) is 0"),
])
def test_bad_inputs_raise_naming_the_argument(fn, args, message):
  with pytest.raises(ValueError, match=message):
    fn(*args)
