"""Adaptive-Consistency (Aggarwal et al., 2023): stop sampling once the majority answer is settled.

Q questions, N sample slots. With a and b the counts of the two most common answers so far
(b = 0 when only one answer was seen), the share p of the top answer gets the posterior
Beta(a + 1, b + 1) (a uniform prior), and sampling stops once P(p > 1/2) >= threshold.
This is `BetaStoppingCriteria` in Pranjal2041/AdaptiveConsistency,
adaptive_consistency/stopping_criterias.py: prob = int_.5^1 x^a (1-x)^b / int_0^1 x^a (1-x)^b
(scipy quad there, betainc here), `stop = prob >= conf_thresh`, conf_thresh = 0.95; answers
beyond the top two are ignored. Unanimous answers: P = 1 - 0.5^(n+1), 0.9375 at n = 3 and
0.96875 at n = 4, so the rule stops at the fourth sample.

Differences from that code: samples with NO_ANSWER (or invalid slots) are not counted (theirs
counts whatever the parser returned, None included), and with no counted answer a = b = 0 and
P = 1/2, where theirs needs at least one answer.
"""

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.sampler import selection


def _check_threshold(threshold) -> None:
  if (isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating))
      or not 0 < threshold < 1):
    raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}")


def settled_probability(answers_QxN, valid_QxN):
  """prob_Q = P(top answer's share > 1/2) under Beta(a + 1, b + 1), a >= b the top two counts.

  float32 betainc: within 1.1e-5 of the exact value wherever it exceeds 0.8 (all counts with
  a + b <= 64; 3.5e-5 near 1/2). For such counts no exact value lies within 8e-5 of 0.95, so
  the default stop decisions are exact.
  """
  counts_QxN, _ = selection.vote_totals(
      answers_QxN, jnp.ones(jnp.shape(answers_QxN), jnp.float32), valid_QxN)
  # Non-first slots hold 0, so the two largest entries are the top two answers' counts.
  top_QxN = -jnp.sort(-counts_QxN, axis=-1)
  a_Q = top_QxN[:, 0]
  b_Q = top_QxN[:, 1] if top_QxN.shape[1] > 1 else jnp.zeros_like(a_Q)
  # P(x > 1/2) = 1 - I_.5(a + 1, b + 1) = I_.5(b + 1, a + 1): no cancellation near 1.
  return jax.scipy.special.betainc(b_Q + 1, a_Q + 1, 0.5)


def beta_stop(answers_QxN, valid_QxN, *, threshold: float = 0.95):
  """stop_Q: settled_probability >= threshold (the paper's code stops on >=, default 0.95)."""
  _check_threshold(threshold)
  return settled_probability(answers_QxN, valid_QxN) >= threshold
