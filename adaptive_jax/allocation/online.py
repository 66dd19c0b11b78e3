"""Budget-aware allocation inside the adaptive loop: one sample budget shared by all questions.

Every round, each question that is still open asks for up to `per_round` samples (one, before
its first); the round's rows go to the open questions in descending order of the chance that
their next sample is verified correct, and no round spends past the budget. That chance is the
mean of a Beta posterior: a prior estimate p0 (the calibrated PRM on the empty prefix, say)
worth `prior_strength` samples, updated with each drawn sample's verifier score v in [0, 1]:

  p = (s * p0 + sum v) / (s + n)          s = prior_strength, n = samples drawn

A question retires when a drawn sample's score reaches `solved_at` (the verifier is confident
it is solved), when p falls below `hopeless_below` (after at least one sample), or when the
budget is spent. Since an open question has no verified sample yet, p is already the value of
its next sample: the online form of the greedy on p (1 - p)^n (`budget.greedy_allocation`).
Worked example, capacity 3 rows, requests (2, 2, 1), p = (0.2, 0.6, 0.6): order 1, 2, 0
(ties to the lower index) -> question 1 gets 2 rows, question 2 gets 1, question 0 none.
"""

import dataclasses

import jax
import jax.numpy as jnp

from adaptive_jax.typed_config import check_integer, check_number, is_number


@dataclasses.dataclass(frozen=True)
class BudgetAllocation:
  """The online allocator's settings (static in the loop)."""
  budget: int  # samples for all questions together
  channel: int = 0  # the score channel that verifies a sample
  solved_at: float = 0.5
  hopeless_below: float = 0.0  # 0 never gives up on a question before the budget is spent
  prior_strength: float = 2.0

  def __post_init__(self):
    check_integer("BudgetAllocation.budget", self.budget, minimum=1)
    check_integer("BudgetAllocation.channel", self.channel, minimum=0)
    for name in ("solved_at", "hopeless_below"):
      value = getattr(self, name)
      if not is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"BudgetAllocation.{name} must be a number in [0, 1], got {value!r}")
    check_number("BudgetAllocation.prior_strength", self.prior_strength, 0.0)


def posterior_mean(prior_Q, score_sum_Q, drawn_Q, strength: float) -> jax.Array:
  """p_Q: the Beta posterior mean of the next sample's verified success (float32)."""
  prior_Q = jnp.asarray(prior_Q, jnp.float32)
  return (strength * prior_Q + score_sum_Q) / (strength + drawn_Q.astype(jnp.float32))


def priority(p_Q, drawn_Q) -> jax.Array:
  """Who is served first: questions with no sample yet (+inf), then by p_Q."""
  return jnp.where(drawn_Q == 0, jnp.inf, p_Q)


def grant(request_Q, priority_Q, capacity) -> jax.Array:
  """granted_Q: rows in descending priority (ties to the lower index), at most each request,
  `capacity` rows in all; the last question served may get part of its request."""
  order_Q = jnp.argsort(-priority_Q, stable=True)
  request_sorted = request_Q[order_Q]
  before = jnp.cumsum(request_sorted) - request_sorted
  granted_sorted = jnp.clip(capacity - before, 0, request_sorted)
  return jnp.zeros_like(request_Q).at[order_Q].set(granted_sorted)
