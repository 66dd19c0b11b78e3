"""DeepConf confidences against NumPy, a window loop and np.percentile; the consensus stop."""

import jax
import numpy as np
import pytest

from adaptive_jax.sampler import confidence
from adaptive_jax.sampler.selection import NO_ANSWER


def test_token_confidence_matches_numpy():
  rng = np.random.default_rng(0)
  logits = (rng.normal(size=(6, 50)) * 3).astype(np.float32)
  logits[0] = 0.0  # uniform: every log-probability is -log V
  logits[1] = -1e4
  logits[1, :20] = 0.0  # all mass on k = 20 tokens: C = log 20, the least possible (Jensen)
  logits[2, 7] = 30.0  # peaked: the other top-k tokens are very unlikely, C is large
  got = jax.jit(confidence.token_confidence, static_argnames="k")(logits, k=20)
  z = logits.astype(np.float64)
  logprobs = z - z.max(-1, keepdims=True)
  logprobs -= np.log(np.exp(logprobs).sum(-1, keepdims=True))
  want = -np.sort(logprobs, axis=-1)[:, -20:].mean(-1)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(got[:2], [np.log(50), np.log(20)], rtol=1e-6)
  assert (got >= np.log(20) - 1e-6).all() and got[2] == got.max() and got[2] > 20
  assert confidence.token_confidence(logits.reshape(2, 3, 50), k=5).shape == (2, 3)  # ...xV


def _lowest_loop(conf_M, length, window):
  """DeepConf's compute_least_grouped (unrounded), then min; +inf for an empty trace."""
  confs = list(conf_M[:length])
  if not confs:
    return np.inf
  if len(confs) < window:
    return sum(confs) / len(confs)
  return min(sum(confs[i:i + window]) / window for i in range(len(confs) - window + 1))


@pytest.mark.parametrize("window", [1, 4, 16, 40])
def test_lowest_group_confidence_matches_window_loop(window):
  rng = np.random.default_rng(window)
  b, m = 40, 32
  conf = rng.gamma(4.0, 1.0, size=(b, m)).astype(np.float32)
  conf[:, -3:] = np.nan  # past every length below: must be ignored
  lengths = rng.integers(1, m - 2, size=b)
  lengths[:3] = [0, 1, min(window, m - 3)]
  f = jax.jit(confidence.lowest_group_confidence, static_argnames="window")
  got = np.asarray(f(conf, lengths, window=window))
  want = np.array([_lowest_loop(c, n, window) for c, n in zip(conf.astype(np.float64), lengths)])
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert got[0] == np.inf and np.isfinite(got[1:]).all()


def test_lowest_group_confidence_long_trace_precision():
  # 64k tokens of C ~ 15: window means accurate to well under DeepConf's 3-decimal rounding.
  rng = np.random.default_rng(1)
  conf = (15 + rng.normal(size=(2, 65536))).astype(np.float32)
  conf[0, 30000:30100] -= 5  # a dip, the lowest window
  lengths = np.array([65536, 50000])
  got = np.asarray(confidence.lowest_group_confidence(conf, lengths, 2048))
  for row, n in enumerate(lengths):
    sums = np.convolve(conf[row, :n].astype(np.float64), np.ones(2048), mode="valid")
    assert abs(got[row] - sums.min() / 2048) < 1e-4


def test_online_threshold_matches_np_percentile():
  warmup = np.array([
      [14.68, 15.11, 17.37, 16.59, 15.33, 16.31, 14.47, 17.32, 14.99, 15.26,
       16.52, 16.03, 14.31, 15.63, 14.03, 14.76],  # 16 warm-up traces, as DeepConf
      [3.0, 1.0, 2.0, 9.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
      [7.0] + [0.0] * 15,
      [0.0] * 16,
  ], np.float32)
  valid = np.zeros(warmup.shape, bool)
  valid[0] = True
  valid[1, :5] = True
  valid[2, 0] = True
  f = jax.jit(confidence.online_threshold, static_argnames="keep_percent")
  for keep in (10, 90, 25.0, 100):
    got = np.asarray(f(warmup, valid, keep_percent=keep))
    for row in range(3):
      want = np.percentile(warmup[row][valid[row]].astype(np.float64), 100 - keep)
      np.testing.assert_allclose(got[row], want, rtol=1e-6)
    assert got[3] == -np.inf  # no warm-up trace: no bar
  # By hand, the five values 1 2 3 5 9: 90th percentile at index 3.6 -> 5 + 0.6 * 4 = 7.4;
  # 10th at index 0.4 -> 1.4.
  np.testing.assert_allclose(f(warmup, valid, keep_percent=10)[1], 7.4, rtol=1e-6)
  np.testing.assert_allclose(f(warmup, valid, keep_percent=90)[1], 1.4, rtol=1e-6)


def test_consensus():
  x = NO_ANSWER
  answers = np.array([
      [1, 1, 1, 2],     # weights 19 of 20 on answer 1: exactly 0.95
      [1, 1, 1, 2],     # 18 of 20: 0.9
      [1, x, x, x],     # a single answered sample holds everything
      [x, x, x, x],     # nothing counted
      [1, 2, 2, 2],     # the top answer by weight is 1 (10 of 13), not the most frequent
  ], np.int32)
  weights = np.array([[9, 5, 5, 1], [8, 5, 5, 2], [1, 9, 9, 9], [1, 1, 1, 1], [10, 1, 1, 1]],
                     np.float32)
  valid = np.ones(answers.shape, bool)
  f = jax.jit(confidence.consensus, static_argnames="tau")
  np.testing.assert_array_equal(f(answers, weights, valid), [True, False, True, False, False])
  np.testing.assert_array_equal(f(answers, weights, valid, tau=0.75),
                                [True, True, True, False, True])
  # An invalid slot drops its weight: row 1 without its answer-2 sample is unanimous.
  valid[1, 3] = False
  assert bool(f(answers, weights, valid)[1])


def test_bad_static_arguments_raise():
  logits = np.zeros((2, 8), np.float32)
  for k in (0, 9, 2.0, True):
    with pytest.raises(ValueError, match="k"):
      confidence.token_confidence(logits, k)
  for window in (0, -1, 1.5):
    with pytest.raises(ValueError, match="window"):
      confidence.lowest_group_confidence(np.zeros((2, 4)), np.array([1, 2]), window)
  for keep in (0, -5, 101, "10"):
    with pytest.raises(ValueError, match="keep_percent"):
      confidence.online_threshold(np.zeros((1, 3)), np.ones((1, 3), bool), keep_percent=keep)
  for tau in (0, 1.5, None):
    with pytest.raises(ValueError, match="tau"):
      confidence.consensus(np.zeros((1, 3), np.int32), np.ones((1, 3)), np.ones((1, 3), bool),
                           tau=tau)
