"""Matched-accuracy ratios against hand-computed curves; the bootstrap against a per-resample loop."""

import time

import numpy as np
import pytest

from adaptive_jax.scaling import matched

# (FLOPs, accuracy): the point at 4 FLOPs is dominated, so the envelope is .2, .5, .5, .8.
FLOPS = [1.0, 2.0, 4.0, 8.0]
ACCURACY = [0.2, 0.5, 0.4, 0.8]


@pytest.mark.parametrize("accuracy, flops, above", [
    (0.1, 1.0, False),  # below the first point
    (0.2, 1.0, False),  # at the first point
    (0.35, 1.5, False),  # halfway between the first two
    (0.5, 2.0, False),  # exactly at a point
    (0.45, 1 + 0.25 / 0.3, False),
    (0.6, 2 + 6 * 0.1 / 0.3, False),  # from (2, .5): the dominated (4, .4) is never an end
    (0.8, 8.0, False),  # at the best point
    (0.9, 8.0, True),  # above the curve: its best point
])
def test_matched_flops_hand_points(accuracy, flops, above):
  got = matched.matched_flops(FLOPS, ACCURACY, accuracy)
  assert got == (pytest.approx(flops, rel=1e-12), above)
  # The points' order does not matter: the curve is sorted by FLOPs.
  assert matched.matched_flops(FLOPS[::-1], ACCURACY[::-1], accuracy) == got


def test_matched_flops_exact_at_points_and_cheapest_best():
  for f, a in [(1.0, 0.2), (2.0, 0.5), (8.0, 0.8)]:
    assert matched.matched_flops(FLOPS, ACCURACY, a) == (f, False)
  # The best accuracy is reached first at 2 FLOPs: above it, 2 is the matched FLOPs.
  assert matched.matched_flops([1, 2, 4], [0.2, 0.8, 0.8], 0.8) == (2.0, False)
  assert matched.matched_flops([1, 2, 4], [0.2, 0.8, 0.8], 0.95) == (2.0, True)


def _hand_fixed():
  """Two questions whose means give the hand curve; correctness fractional."""
  flops_KxQ = np.array([[f - 0.5, f + 0.5] for f in FLOPS])
  correct_KxQ = np.array([[a - 0.1, a + 0.1] for a in ACCURACY])
  return flops_KxQ, correct_KxQ


@pytest.mark.parametrize("method_flops, method_accuracy, ratio, above, gain", [
    (3.0, 0.6, 3 / 4, False, 0.6 - (0.5 + 0.3 / 6)),  # between corners (2, .5) and (8, .8)
    (100.0, 0.6, 100 / 4, False, 0.6 - 0.8),  # FLOPs clipped to the curve's 8
    (0.5, 0.1, 0.5 / 1.0, False, 0.1 - 0.2),  # FLOPs clipped to the curve's 1
    (4.0, 0.9, 4 / 8, True, 0.9 - 0.6),  # above the curve: at its best point; at 4 FLOPs .6
    (6.0, 0.65, 6 / 5.0, False, 0.65 - 0.7),  # on the last segment, (2, .5) to (8, .8)
])
def test_matched_ratio_hand_values(method_flops, method_accuracy, ratio, above, gain):
  flops_KxQ, correct_KxQ = _hand_fixed()
  result = matched.matched_ratio(flops_KxQ, correct_KxQ, [method_flops] * 2,
                                 [method_accuracy - 0.05, method_accuracy + 0.05])
  assert result["ratio"] == pytest.approx(ratio, rel=1e-12)
  assert result["above_curve"] is above
  assert result["accuracy_gain_at_equal_flops"] == pytest.approx(gain, abs=1e-12)
  assert result["method_accuracy"] == pytest.approx(method_accuracy, abs=1e-12)
  assert result["method_flops"] == pytest.approx(method_flops, rel=1e-12)


def _nested_curve(rng, q, k=6):
  """A fixed curve whose point k is correct wherever point k - 1 is (monotone per question)."""
  skill_Q = rng.random(q)
  correct_KxQ = (skill_Q[None, :] < np.linspace(0.2, 0.8, k)[:, None]).astype(float)
  flops_KxQ = np.arange(1, k + 1)[:, None] * rng.uniform(0.5, 1.5, q)[None, :]
  return flops_KxQ, correct_KxQ


def test_a_point_of_the_curve_has_ratio_one():
  flops_KxQ, correct_KxQ = _nested_curve(np.random.default_rng(0), 128)
  assert (np.diff(correct_KxQ.mean(1)) > 0).all()
  result = matched.paired_bootstrap(flops_KxQ, correct_KxQ, flops_KxQ[3], correct_KxQ[3],
                                    resamples=500, seed=0)
  assert result["ratio"] == 1.0
  assert result["accuracy_gain_at_equal_flops"] == 0.0
  assert not result["above_curve"]
  lo, hi = result["interval"]
  assert lo <= 1.0 <= hi


def _loop_bootstrap(fixed_flops_KxQ, fixed_correct_KxQ, method_flops_Q, method_correct_Q,
                    resamples, seed, level):
  """The contract, one resample at a time through matched_ratio."""
  q = len(method_flops_Q)
  index_RxQ = np.random.default_rng(seed).integers(0, q, (resamples, q))
  results = [matched.matched_ratio(fixed_flops_KxQ[:, i], fixed_correct_KxQ[:, i],
                                   method_flops_Q[i], method_correct_Q[i]) for i in index_RxQ]
  log_R = np.log([r["ratio"] for r in results])
  lo, hi = np.quantile(log_R, [(1 - level) / 2, (1 + level) / 2])
  gain = np.quantile([r["accuracy_gain_at_equal_flops"] for r in results],
                     [(1 - level) / 2, (1 + level) / 2])
  return np.exp([lo, hi]), (hi - lo) / 2, np.mean([r["above_curve"] for r in results]), gain


@pytest.mark.parametrize("binary", [False, True])
def test_bootstrap_matches_per_resample_loop(binary):
  rng = np.random.default_rng(1)
  k, q = 8, 60
  flops_KxQ = np.arange(1, k + 1)[:, None] * rng.uniform(0.5, 1.5, (k, q))
  correct_KxQ = rng.random((k, q)) * np.linspace(0.3, 1, k)[:, None]
  method_flops_Q = rng.uniform(1, 6, q)
  method_correct_Q = rng.random(q) * 0.9
  if binary:  # 0/1 correctness: accuracies tie with the curve's often, and above it sometimes
    correct_KxQ = (rng.random((k, q)) < np.linspace(0.3, 0.6, k)[:, None]).astype(float)
    method_correct_Q = (rng.random(q) < 0.62).astype(float)
  result = matched.paired_bootstrap(flops_KxQ, correct_KxQ, method_flops_Q, method_correct_Q,
                                    resamples=300, seed=5, level=0.8)
  interval, halfwidth, above, gain = _loop_bootstrap(flops_KxQ, correct_KxQ, method_flops_Q,
                                                     method_correct_Q, 300, 5, 0.8)
  np.testing.assert_allclose(result["interval"], interval, rtol=1e-12)
  np.testing.assert_allclose(result["accuracy_gain_interval"], gain, rtol=1e-9, atol=1e-12)
  assert gain[0] < gain[1]
  assert result["log_ratio_halfwidth"] == pytest.approx(halfwidth, rel=1e-9, abs=1e-12)
  assert result["above_curve_fraction"] == above
  if binary:
    assert 0 < above < 1
  point = matched.matched_ratio(flops_KxQ, correct_KxQ, method_flops_Q, method_correct_Q)
  assert {name: result[name] for name in point} == point


def _study(rng, q):
  flops_KxQ = np.arange(1, 9)[:, None] * rng.uniform(0.5, 1.5, (8, q))
  correct_KxQ = (rng.random((8, q)) < np.linspace(0.2, 0.7, 8)[:, None]).astype(float)
  method_flops_Q = rng.uniform(1, 4, q)
  method_correct_Q = (rng.random(q) < 0.5).astype(float)
  return flops_KxQ, correct_KxQ, method_flops_Q, method_correct_Q


def test_interval_shrinks_as_one_over_sqrt_q():
  rng = np.random.default_rng(2)
  small = matched.paired_bootstrap(*_study(rng, 250), resamples=1000, seed=0)
  large = matched.paired_bootstrap(*_study(rng, 1000), resamples=1000, seed=0)
  assert 1.4 < small["log_ratio_halfwidth"] / large["log_ratio_halfwidth"] < 2.9


def test_bootstrap_is_fast():
  inputs = _study(np.random.default_rng(3), 512)
  start = time.perf_counter()
  matched.paired_bootstrap(*inputs, resamples=2000, seed=0)
  assert time.perf_counter() - start < 2.0


def test_ratio_line():
  result = {"ratio": 0.51234, "interval": [0.4, 0.6789], "above_curve": False}
  assert matched.ratio_line("ias", result) == "ias = 0.512 [0.400, 0.679]"
  result["above_curve"] = True
  assert matched.ratio_line("ias", result) == (
      "ias = 0.512 [0.400, 0.679] (above the fixed curve)")
  with pytest.raises(ValueError, match="result"):
    matched.ratio_line("ias", {"ratio": 1.0, "above_curve": False})


def test_gain_line():
  result = {"accuracy_gain_at_equal_flops": 0.0123, "accuracy_gain_interval": [-0.02, 0.0456]}
  assert matched.gain_line("ias", result) == "ias = +0.012 [-0.020, +0.046]"
  with pytest.raises(ValueError, match="accuracy_gain_interval"):
    matched.gain_line("ias", {"accuracy_gain_at_equal_flops": 0.0})


def _valid():
  flops_KxQ, correct_KxQ = _hand_fixed()
  return dict(fixed_flops_KxQ=flops_KxQ, fixed_correct_KxQ=correct_KxQ,
              method_flops_Q=np.array([3.0, 3.0]), method_correct_Q=np.array([0.5, 0.7]))


@pytest.mark.parametrize("name, value", [
    ("fixed_flops_KxQ", np.zeros((4, 2))),
    ("fixed_flops_KxQ", np.ones(4)),
    ("fixed_correct_KxQ", np.full((4, 2), 1.5)),
    ("fixed_correct_KxQ", np.full((4, 3), 0.5)),
    ("method_flops_Q", np.array([3.0, np.inf])),
    ("method_flops_Q", np.ones(3)),
    ("method_correct_Q", np.array([0.5, np.nan])),
])
def test_input_errors_name_their_argument(name, value):
  kwargs = {**_valid(), name: value}
  with pytest.raises(ValueError, match=name):
    matched.matched_ratio(**kwargs)


@pytest.mark.parametrize("option, value", [
    ("resamples", 0), ("seed", -1), ("level", 1.0), ("level", 0),
])
def test_bootstrap_option_errors(option, value):
  options = {"resamples": 10, "seed": 0, "level": 0.9, option: value}
  with pytest.raises(ValueError, match=option):
    matched.paired_bootstrap(**_valid(), **options)


def test_matched_flops_errors():
  with pytest.raises(ValueError, match="curve_accuracy_K"):
    matched.matched_flops([1, 2], [0.1], 0.5)
  with pytest.raises(ValueError, match="curve_flops_K"):
    matched.matched_flops([], [], 0.5)
  with pytest.raises(ValueError, match="accuracy"):
    matched.matched_flops([1, 2], [0.1, 0.2], float("nan"))
