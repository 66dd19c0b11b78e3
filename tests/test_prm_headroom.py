"""Reference predictors: group means against a hand example, the MC noise floor against
simulated rollouts."""

import numpy as np
import pytest

from adaptive_jax.prm import headroom


def test_group_means_by_hand():
  p = headroom.group_mean_predictions(["a", "a", "b"], [0.0, 1.0, 0.25], ["b", "a", "c"])
  np.testing.assert_allclose(p, [0.25, 0.5, 1.25 / 3])  # "c" unseen: the mean of all


def test_group_means_with_tuple_keys_match_a_loop():
  rng = np.random.default_rng(0)
  keys = [tuple(k) for k in rng.integers(0, 3, (200, 2))]
  y = rng.random(200)
  p = headroom.group_mean_predictions(keys, y, keys[:50])
  for key, value in zip(keys[:50], p):
    assert value == pytest.approx(np.mean([t for k, t in zip(keys, y) if k == key]))


def test_noise_floor_matches_simulated_rollouts():
  rng = np.random.default_rng(1)
  p_N = rng.random(200_000)
  for num_rollouts in (2, 4, 8):
    y_N = rng.binomial(num_rollouts, p_N) / num_rollouts
    simulated = np.mean((y_N - p_N) ** 2)  # what the true rates score
    assert headroom.mc_noise_floor(y_N, num_rollouts) == pytest.approx(simulated, rel=0.02)
    assert simulated == pytest.approx(np.mean(p_N * (1 - p_N)) / num_rollouts, rel=0.02)


def test_bad_inputs_name_the_argument():
  with pytest.raises(ValueError, match="num_rollouts"):
    headroom.mc_noise_floor([0.5, 1.0], 1)
  with pytest.raises(ValueError, match="num_rollouts"):
    headroom.mc_noise_floor([0.5, 1.0], 4.0)
  with pytest.raises(ValueError, match="fit_y"):
    headroom.group_mean_predictions(["a"], [1.5], ["a"])
  with pytest.raises(ValueError, match="one length"):
    headroom.group_mean_predictions(["a", "b"], [0.5], ["a"])
