"""Calibration baselines: recovered temperature, monotone isotonic map, bin means, conformal coverage."""

import numpy as np
import pytest
import scipy.special
import sklearn.isotonic

from adaptive_jax import prm


def _overconfident(seed, n, true_temperature):
  """PRM outputs sigmoid(z) whose true success rates are sigmoid(z / T*)."""
  rng = np.random.default_rng(seed)
  z = rng.normal(0.0, 3.0, n)
  return rng, scipy.special.expit(z), scipy.special.expit(z / true_temperature)


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_temperature_scaling_recovers_the_temperature_from_exact_rates(true_temperature):
  _, p, rate = _overconfident(0, 2000, true_temperature)
  fitted = prm.TemperatureScaling.fit(p, rate)
  assert fitted.temperature == pytest.approx(true_temperature, rel=1e-4)
  np.testing.assert_allclose(fitted(p), rate, atol=1e-4)


def test_temperature_scaling_from_monte_carlo_targets():
  rng, p, rate = _overconfident(1, 5000, 2.5)
  y = rng.binomial(8, rate) / 8  # 8 rollouts per prefix
  fitted = prm.TemperatureScaling.fit(p, y)
  assert fitted.temperature == pytest.approx(2.5, rel=0.05)
  assert prm.brier(fitted(p), y) < 0.8 * prm.brier(p, y)


def test_isotonic_is_monotone_and_matches_sklearn():
  rng, p, rate = _overconfident(2, 1000, 2.0)
  y = rng.binomial(8, rate) / 8
  fitted = prm.IsotonicCalibration.fit(p, y)
  grid = np.linspace(0, 1, 2001)
  out = fitted(grid)
  assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1
  sk = sklearn.isotonic.IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
  np.testing.assert_allclose(out, sk.predict(grid), atol=1e-12)
  # Outside the calibration range the map is clipped to its end values.
  assert fitted(np.array([0.0]))[0] == fitted(np.array([p.min()]))[0]


def test_isotonic_pools_adjacent_violators_by_hand():
  # y = (0, .5, .25, 1) at p = (.1, .2, .3, .4): .5 > .25 is pooled to .375 at p = .2 and .3
  fitted = prm.IsotonicCalibration.fit([0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.25, 1.0])
  np.testing.assert_allclose(fitted(np.array([0.1, 0.2, 0.25, 0.3, 0.4])), [0, .375, .375, .375, 1])


def test_histogram_binning_by_hand():
  p, y = [0.1, 0.2, 0.3, 0.9], [0.0, 0.0, 1.0, 1.0]
  # Equal width, 2 bins [0, .5) and [.5, 1]: means (0 + 0 + 1) / 3 and 1.
  width = prm.HistogramBinning.fit(p, y, num_bins=2)
  np.testing.assert_allclose(width.edges_B1, [0, 0.5, 1])
  np.testing.assert_allclose(width(np.array([0.0, 0.3, 0.49, 0.5, 1.0])), [1/3, 1/3, 1/3, 1, 1])
  # Equal mass, 2 bins: the median of p is .25, so [0, .25) holds {.1, .2}, [.25, 1] {.3, .9}.
  mass = prm.HistogramBinning.fit(p, y, num_bins=2, equal_mass=True)
  np.testing.assert_allclose(mass.edges_B1, [0, 0.25, 1])
  np.testing.assert_allclose(mass(np.array([0.0, 0.2, 0.25, 0.6])), [0, 0, 1, 1])
  # Four bins: [0, .25) {.1, .2} -> 0, [.25, .5) {.3} -> 1, [.75, 1] {.9} -> 1, and the empty
  # [.5, .75) keeps the identity at its centre, .625.
  np.testing.assert_allclose(prm.HistogramBinning.fit(p, y, num_bins=4).values_B, [0, 1, .625, 1])


@pytest.mark.parametrize("equal_mass", [False, True])
def test_histogram_binning_is_piecewise_constant_at_the_bin_means(equal_mass):
  rng, p, rate = _overconfident(3, 3000, 2.0)
  y = rng.binomial(8, rate) / 8
  fitted = prm.HistogramBinning.fit(p, y, num_bins=10, equal_mass=equal_mass)
  edges = fitted.edges_B1
  assert edges[0] == 0 and edges[-1] == 1 and len(edges) == 11
  if not equal_mass:
    np.testing.assert_allclose(edges, np.linspace(0, 1, 11))
  for b in range(10):
    in_bin = (p >= edges[b]) & ((p < edges[b + 1]) | (b == 9))
    if equal_mass:
      assert abs(in_bin.sum() - 300) <= 1
    probe = np.linspace(edges[b], edges[b + 1], 7)[:-1]  # inside the bin, left edge included
    np.testing.assert_allclose(fitted(probe), y[in_bin].mean(), rtol=1e-12)


def test_conformal_shift_by_hand():
  q, y, one_each = [0.5] * 4, [0.1, 0.2, 0.3, 0.4], range(4)
  # One record per question: scores q - y sorted: .1 .2 .3 .4; m = 4
  # alpha = .5: k = ceil(5 * .5) = 3 -> shift .3; alpha = .2: k = ceil(5 * .8) = 4 -> .4
  # alpha = .1: k = ceil(4.5) = 5 > m -> shift inf -> every bound clipped to 0
  fit = prm.ConformalLowerBound.fit
  assert fit(q, y, question=one_each, alpha=0.5).shift == pytest.approx(0.3)
  fitted = fit(q, y, question=one_each, alpha=0.2)
  np.testing.assert_allclose(fitted(np.array([0.5, 0.3, 0.9])), [0.1, 0.0, 0.5])
  assert np.all(fit(q, y, question=one_each, alpha=0.1)(np.array([0.5, 1.0])) == 0)
  # A bound that is too low moves up: nine scores .1 - .5 = -.4, k = ceil(10 * .9) = 9 ->
  # shift -.4, so .8 -> 1.2, clipped to 1.
  assert fit([0.1] * 9, [0.5] * 9, question=range(9), alpha=0.1)(np.array([0.8]))[0] == 1.0
  # The docstring's example: questions a: q - y = (.1, .4), b: (.2,), c: (.3, .0); a question
  # scores its largest: .4 .2 .3; alpha = .5: k = ceil(4 * .5) = 2 -> shift .3.
  q, y = [0.5, 0.5, 0.5, 0.5, 0.5], [0.4, 0.1, 0.3, 0.2, 0.5]
  assert fit(q, y, question=["a", "a", "b", "c", "c"], alpha=0.5).shift == pytest.approx(0.3)
  assert fit(q, y, question=range(5), alpha=0.5).shift == pytest.approx(0.2)  # records: .0-.4


def test_question_coverage_by_hand():
  covered = [True, False, True, True, True]
  assert prm.calibration.question_coverage(covered, [0, 0, 1, 2, 2]) == pytest.approx(2 / 3)
  assert prm.calibration.question_coverage(covered, range(5)) == pytest.approx(4 / 5)


def _questions(rng, num_questions, targets):
  """(q_lo_N, y_N, question_N): questions with 1-8 correlated records each (prefixes of one
  response share most of their error), a question's records sharing its difficulty z."""
  sizes = rng.integers(1, 9, num_questions)
  question = np.repeat(np.arange(num_questions), sizes)
  z = rng.normal(0.0, 1.5, num_questions)[question]
  shared = rng.normal(size=num_questions)[question]  # the question's own error, in every record
  noise = 0.9 * shared + 0.3 * rng.normal(size=z.size)
  if targets == "continuous":
    y = scipy.special.expit(z + noise)
  else:
    y = rng.binomial(8, scipy.special.expit(z + noise)) / 8
  return scipy.special.expit(z), y, question  # the median, not a 10% quantile


@pytest.mark.parametrize("targets", ["continuous", "monte_carlo"])
def test_conformal_covers_whole_questions_over_random_splits(targets):
  alpha, rng = 0.1, np.random.default_rng(4)
  q_lo, y, question = _questions(rng, 1200, targets)
  assert np.mean(y >= q_lo) < 0.6
  by_question, by_record_fit = [], []
  for _ in range(200):
    perm = rng.permutation(1200)
    cal, test = np.isin(question, perm[:200]), np.isin(question, perm[200:])
    fitted = prm.ConformalLowerBound.fit(q_lo[cal], y[cal], question=question[cal], alpha=alpha)
    by_question.append(prm.calibration.question_coverage(y[test] >= fitted(q_lo[test]),
                                                         question[test]))
    # Treating records as exchangeable (one question each) covers records, not questions.
    records = prm.ConformalLowerBound.fit(q_lo[cal], y[cal], question=np.arange(cal.sum()),
                                          alpha=alpha)
    by_record_fit.append(prm.calibration.question_coverage(y[test] >= records(q_lo[test]),
                                                           question[test]))
  assert 1 - alpha - 0.02 <= np.mean(by_question) <= 1 - alpha + 0.05
  assert np.mean(by_record_fit) < 1 - alpha - 0.03


@pytest.mark.parametrize("fit, args, kwargs, message", [
    (prm.TemperatureScaling.fit, ([0.5, 1.5], [0, 1]), {}, "p must be probabilities"),
    (prm.IsotonicCalibration.fit, ([0.5, 0.5], [0, np.nan]), {}, "y must be probabilities"),
    (prm.HistogramBinning.fit, ([0.5], [0.0]), {"num_bins": 0}, "num_bins must be an integer"),
    (prm.HistogramBinning.fit, ([0.5], [0.0, 1.0]), {}, "p and y must have the same shape"),
    (prm.ConformalLowerBound.fit, ([0.5], [0.0]), {"question": [0], "alpha": 1.0},
     "alpha must be in \\(0, 1\\)"),
    (prm.ConformalLowerBound.fit, ([], []), {"question": []}, "q_lo must be non-empty"),
    (prm.ConformalLowerBound.fit, ([0.5, 0.5], [0.0, 0.1]), {"question": [0]},
     "question must give one id per record: got 1 ids for 2 records"),
])
def test_bad_inputs_raise_naming_the_argument(fit, args, kwargs, message):
  with pytest.raises(ValueError, match=message):
    fit(*args, **kwargs)


def test_applying_to_bad_probabilities_raises():
  with pytest.raises(ValueError, match="p must be probabilities"):
    prm.TemperatureScaling(temperature=2.0)(np.array([1.2]))
