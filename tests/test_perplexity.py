"""perplexity: exp of the mean NLL over the scored tokens, against hand-computed values."""

import math

import numpy as np
import pytest

from adaptive_jax.perplexity import perplexity


def test_mean_nll_over_real_tokens_only():
  nll_BxT = np.array([[1.0, 2.0, 9.9], [3.0, 7.7, 7.7]], np.float32)
  mask_BxT = np.array([[True, True, False], [True, False, False]])
  # (1 + 2 + 3) / 3 = 2 nats per real token; the padding's 9.9 and 7.7 are left out.
  assert perplexity(nll_BxT[mask_BxT]) == pytest.approx(math.e ** 2, rel=1e-12)
  assert perplexity(6.0, 3) == pytest.approx(math.e ** 2, rel=1e-12)


def test_every_token_without_a_mask_and_float64_sums():
  assert perplexity(np.full((4, 5), math.log(7.0))) == pytest.approx(7.0, rel=1e-12)
  # float32 losses of very different sizes, summed in float64.
  nll = np.concatenate([np.full(1000, 1e-4, np.float32), [np.float32(1e4)]])
  assert perplexity(nll) == pytest.approx(math.exp((1000 * 1e-4 + 1e4) / 1001), rel=1e-9)


def test_no_token_or_an_array_with_a_count_raises():
  with pytest.raises(ValueError, match="at least one scored token"):
    perplexity(np.zeros((2, 0)))
  with pytest.raises(ValueError, match="num_tokens=3 goes with a summed NLL"):
    perplexity(np.ones(3), 3)
