"""Instance-adaptive sample counts against the closed form, the paper's examples and a loop."""

import math

import jax
import numpy as np
import pytest

from adaptive_jax.allocation import ias


def _closed_form(p, q=0.99):
  p = min(max(p, 1e-4), 1 - 1e-4)
  return math.ceil(math.log(1 - q) / math.log(1 - p))


def test_paper_examples():
  # q = .99: p = .9 -> log .01 / log .1 = 2 exactly; .5 -> 6.64 -> 7; .1 -> 43.7 -> 44
  np.testing.assert_array_equal(ias.num_samples([0.9, 0.5, 0.1], n_max=1000), [2, 7, 44])


def test_matches_closed_form_and_definition():
  p = np.linspace(0.001, 0.999, 999)
  got = np.asarray(jax.jit(lambda p: ias.num_samples(p, n_max=10**6, q=0.95))(p))
  for p_i, n in zip(p, got):
    ratio = math.log(0.05) / math.log(1 - p_i)
    if ratio - math.floor(ratio) > 1e-4 * ratio:  # away from the float tolerance at integers
      assert n == _closed_form(p_i, 0.95)
    # The definition: n samples reach confidence q (up to float rounding), n - 1 do not.
    assert 1 - (1 - p_i) ** n >= 0.95 - 1e-6 and 1 - (1 - p_i) ** (n - 1) < 0.95


def test_clipping_cap_and_shape():
  # p = 0 is clipped to 1e-4 (N = 46050) then capped; p = 1 to 1 - 1e-4 (ratio 0.5 -> 1)
  n = ias.num_samples(np.array([[0.0, 1.0], [0.5, 0.05]]), n_max=64)
  assert n.dtype == np.int32 and n.shape == (2, 2)
  np.testing.assert_array_equal(n, [[64, 1], [7, 64]])
  assert _closed_form(0.0) == 46050


def _num_beams_loop(p_K, m_max, q=0.99):
  for k, p in enumerate(sorted(p_K, reverse=True), start=1):
    if k * m_max >= _closed_form(p, q):
      return k
  return len(p_K)


def test_num_beams_by_hand():
  p_xK = np.array([
      [0.3, 0.3, 0.1],    # N = 13, 13, 44: 1 * 8 < 13, 2 * 8 >= 13 -> 2
      [0.1, 0.9, 0.5],    # sorted .9, .5, .1: N(.9) = 2 <= 8 -> 1
      [0.2, 0.15, 0.1],   # N = 21, 29, 44 against 8, 16, 24: never -> all 3
  ])
  np.testing.assert_array_equal(ias.num_beams(p_xK, m_max=8), [2, 1, 3])


def test_num_beams_matches_loop():
  p = np.random.default_rng(0).beta(0.5, 0.5, size=(300, 8))
  got = jax.jit(lambda p: ias.num_beams(p, m_max=4))(p)
  np.testing.assert_array_equal(got, [_num_beams_loop(row, 4) for row in p])


def test_num_expansions():
  # weakest beam p = .1: N = 44 over K = 3 beams -> ceil(44 / 3) = 15, capped at m_max
  np.testing.assert_array_equal(ias.num_expansions([[0.9, 0.1, 0.5]], m_max=16), [15])
  np.testing.assert_array_equal(ias.num_expansions([[0.9, 0.1, 0.5]], m_max=8), [8])
  # weakest p = .5: N = 7 over 4 beams -> 2
  np.testing.assert_array_equal(ias.num_expansions([[0.9, 0.5, 0.6, 0.7]], m_max=8), [2])


@pytest.mark.parametrize("fn, args, kwargs, message", [
    (ias.num_samples, ([0.5],), {"n_max": 8, "q": 1.0}, "q must be a confidence level in \\(0, 1\\)"),
    (ias.num_samples, ([0.5],), {"n_max": 8, "q": 0.0}, "q must be a confidence level"),
    (ias.num_samples, ([0.5],), {"n_max": 0}, "n_max must be an integer >= 1"),
    (ias.num_samples, ([0.5],), {"n_max": 2.5}, "n_max must be an integer >= 1"),
    (ias.num_samples, ([1.5],), {"n_max": 8}, "p must be probabilities in \\[0, 1\\]"),
    (ias.num_samples, ([np.nan],), {"n_max": 8}, "p must be probabilities"),
    (ias.num_beams, ([[0.5]],), {"m_max": 0}, "m_max must be an integer >= 1"),
    (ias.num_beams, (0.5,), {"m_max": 8}, "p_xK must have a last axis"),
    (ias.num_expansions, ([[-0.5]],), {"m_max": 8}, "p_xK must be probabilities"),
])
def test_bad_inputs_raise_naming_the_argument(fn, args, kwargs, message):
  with pytest.raises(ValueError, match=message):
    fn(*args, **kwargs)


def test_large_uncapped_counts_are_exact():
  """Concrete p is counted in float64: exact wherever the ratio is not within 1e-9 of an
  integer, up to N = 46050 (p clipped at 1e-4); a float32 shrink of 1e-5 lost one there."""
  for q in (0.5, 0.99, 0.999):
    p = np.concatenate([np.geomspace(1e-4, 0.5, 5000), np.linspace(0.5, 1 - 1e-4, 2000)])
    ratio = np.log1p(-q) / np.log1p(-p)
    clear = np.abs(ratio - np.round(ratio)) > 1e-9 * ratio
    got = np.asarray(ias.num_samples(p, n_max=10**9, q=q))
    np.testing.assert_array_equal(got[clear], np.ceil(ratio[clear]))
  assert int(ias.num_samples(0.0, n_max=10**9)) == 46050
  assert int(ias.num_samples(2e-4, n_max=10**9)) == math.ceil(math.log(0.01) / math.log(1 - 2e-4))
