"""The question bootstrap against exhaustive enumeration, closed forms and scipy's bootstrap."""

import itertools
from collections import Counter

import numpy as np
import pytest
import scipy.stats

from adaptive_jax import bootstrap


def test_resamples_follow_the_exhaustive_distribution_of_draws():
  x_Q = np.array([0.0, 1.0, 5.0])
  # Every one of the 3**3 equally likely draws of three questions, and the mean each gives.
  exact = Counter(round(float(np.mean(x_Q[list(d)])), 9)
                  for d in itertools.product(range(3), repeat=3))
  counts_RxQ = bootstrap.resample_counts(3, resamples=60_000, seed=0)
  assert np.all(counts_RxQ.sum(1) == 3)
  seen = Counter(np.round(counts_RxQ @ x_Q / 3, 9).tolist())
  assert set(seen) == set(exact)
  for mean, ways in exact.items():
    assert seen[mean] / 60_000 == pytest.approx(ways / 27, abs=0.006)


def test_bootstrap_mean_has_the_closed_form_variance():
  x_Q = np.random.default_rng(1).normal(size=40)
  counts_RxQ = bootstrap.resample_counts(40, resamples=40_000, seed=2)
  means_R = counts_RxQ @ x_Q / 40
  # Drawing Q of the Q values with replacement: Var(mean) = population variance / Q.
  assert means_R.var() == pytest.approx(x_Q.var() / 40, rel=0.03)
  assert means_R.mean() == pytest.approx(x_Q.mean(), abs=0.01)


def test_paired_ratio_interval_equals_scipys_percentile_bootstrap():
  rng = np.random.default_rng(3)
  a_Q, b_Q = rng.uniform(size=30), rng.uniform(0.5, 1.5, size=30)
  counts_RxQ = bootstrap.resample_counts(30, resamples=500, seed=7)
  ours = bootstrap.percentile_interval((counts_RxQ @ a_Q) / (counts_RxQ @ b_Q), 0.9)
  ref = scipy.stats.bootstrap((a_Q, b_Q), lambda a, b, axis: a.sum(axis) / b.sum(axis),
                              paired=True, vectorized=True, n_resamples=500,
                              confidence_level=0.9, method="percentile",
                              rng=np.random.default_rng(7)).confidence_interval
  np.testing.assert_allclose(ours, [ref.low, ref.high], rtol=1e-12)


def test_percentile_interval_by_hand():
  assert bootstrap.percentile_interval(np.arange(101.0), 0.9) == pytest.approx([5.0, 95.0])
  assert bootstrap.percentile_interval([0.0, 10.0], 0.5) == pytest.approx([2.5, 7.5])


@pytest.mark.parametrize("call, message", [
    (lambda: bootstrap.resample_counts(0, resamples=10, seed=0), "num_questions must be"),
    (lambda: bootstrap.resample_counts(3, resamples=0, seed=0), "resamples must be"),
    (lambda: bootstrap.resample_counts(3, resamples=10, seed=-1), "seed must be"),
    (lambda: bootstrap.percentile_interval([1.0], 1.0), "level must be"),
])
def test_bad_arguments_raise_naming_them(call, message):
  with pytest.raises(ValueError, match=message):
    call()
