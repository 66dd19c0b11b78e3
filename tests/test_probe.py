"""Probe IAS estimates: features, leave-one-out targets, NumPy and traced paths agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.allocation import combined, ias, probe


def test_leave_one_out_rate_by_hand():
  rate = probe.leave_one_out_rate([[1, 0, 1], [0, 0, 0]])
  np.testing.assert_allclose(rate, [[0.5, 1.0, 0.5], [0, 0, 0]])
  with pytest.raises(ValueError, match="at least 2 samples"):
    probe.leave_one_out_rate([[1], [0]])


def test_features_by_hand_and_empty_sample_is_nan():
  x = probe.features(np.array([2.0, np.inf]), np.array([0.5, 0.9]), np.array([0.1, 1.0]))
  np.testing.assert_allclose(x[0], [2.0, 0.0, np.log(0.1 / 0.9)], rtol=1e-6)
  assert np.isnan(x[1, 0]) and x[1, 2] == pytest.approx(np.log(0.9999 / 1e-4), rel=1e-4)


def test_fit_and_the_device_target_match_numpy():
  rng = np.random.default_rng(0)
  conf = rng.normal(5, 1, 400)
  score, prior = rng.uniform(0.05, 0.95, 400), rng.uniform(0.05, 0.95, 400)
  truth = 1 / (1 + np.exp(-(1.5 * (conf - 5) + 0.5 * np.log(score / (1 - score)))))
  x = probe.features(conf, score, prior)
  est = probe.ProbeEstimate.fit("combined", x, truth)
  w = dict(zip(("confidence", "score", "prior"), est.estimate.weights_F / est.estimate.scale_F))
  assert w["confidence"] > 1.0 and w["score"] > 0.2 and abs(w["prior"]) < 0.2
  only_conf = probe.ProbeEstimate.fit("confidence", x, truth)
  assert only_conf.estimate.weights_F.shape == (1,)
  # NumPy in -> the logistic by hand.
  z = (x - est.estimate.mean_F) / est.estimate.scale_F
  np.testing.assert_allclose(est(x), 1 / (1 + np.exp(-(z @ est.estimate.weights_F
                                                      + est.estimate.bias))), rtol=1e-12)
  # Traced, as the adaptive loop calls it: the first sample's features -> N(p).
  fn = probe.target_fn(est, channel=1, n_max=64, q=0.99)
  scores_QxKxC = jnp.stack([jnp.zeros(400), jnp.asarray(score)], -1)[:, None, :]
  target_Q = jax.jit(fn)({"prior_Q": jnp.asarray(prior)}, jnp.arange(400),
                         jnp.zeros((400, 1), jnp.int32), scores_QxKxC,
                         jnp.asarray(conf)[:, None].astype(jnp.float32))
  expected_Q = np.asarray(ias.num_samples(est(x), n_max=64, q=0.99))
  assert np.mean(np.asarray(target_Q) == expected_Q) >= 0.99  # float32 vs float64 at a ceil
  assert np.abs(np.asarray(target_Q) - expected_Q).max() <= 1
  assert len(np.unique(expected_Q)) > 5


def test_unknown_kind_raises_naming_the_choices():
  with pytest.raises(ValueError, match=r"probe kind must be one of \('confidence', 'combined'\)"):
    probe.ProbeEstimate.fit("prm", np.zeros((4, 3)), np.ones(4) / 2)
  assert isinstance(probe.ProbeEstimate.fit("confidence", np.c_[np.arange(4.), np.zeros((4, 2))],
                                            np.array([0, 0.2, 0.8, 1])).estimate,
                    combined.CombinedEstimate)
