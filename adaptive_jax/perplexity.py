"""Perplexity: exp of the mean negative log-likelihood (nats) per scored token.

The one place every study and evaluation turns token losses into a perplexity. Padding and
separator tokens are left out by the caller (`perplexity(nll_BxT[mask_BxT])`, or a masked sum
and its count), never averaged in:

  nll  [[1.0, 2.0, 9.9],     mask [[T, T, F],     perplexity = exp((1 + 2 + 3) / 3) = e^2
        [3.0, 7.7, 7.7]]           [T, F, F]]
"""

import math

import numpy as np


def perplexity(nll_nats, num_tokens: int | None = None) -> float:
  """exp(total NLL / tokens), summed in float64.

  `nll_nats`: per-token NLLs of the scored tokens (any shape; `num_tokens` left None), or their
  sum with `num_tokens` the number of tokens it covers.
  """
  nll = np.asarray(nll_nats, np.float64)
  if num_tokens is None:
    num_tokens = nll.size
  elif nll.ndim:
    raise ValueError(f"perplexity: num_tokens={num_tokens} goes with a summed NLL (a scalar), "
                     f"got NLLs of shape {nll.shape}")
  if num_tokens < 1:
    raise ValueError(f"perplexity needs at least one scored token, got {num_tokens}")
  return math.exp(float(nll.sum()) / num_tokens)
