"""One final answer per question from N sampled solutions: majority, weighted vote, best-of-N.

Q questions (not quantile levels), N sample slots, S steps. A sample counts only if its slot
is valid AND it has an answer (answers_QxN != NO_ANSWER); samples without an answer are left
out of every aggregation (no vote, no weight, no score). A question with no counted sample
gets NO_ANSWER.

Tie rule, the same for every function: among answers with equal total (vote count, summed
weight, or best score) the answer whose FIRST counted sample has the lowest slot index wins.
Slots 0..4 answering (7, 3, 3, 7, 5) tie 7 and 3 at two votes each; 7 wins (first at slot 0).
Best-of-N breaks ties the same way, by the answer's first slot, not the best sample's slot.
"""

import jax.numpy as jnp

NO_ANSWER = int(jnp.iinfo(jnp.int32).min)  # a sample with no parsable answer

_HOW = ("last", "min")


def _check(answers_QxN, **others):
  """answers_QxN as int32 and the other arrays, after checking they all share its [Q, N] shape."""
  answers_QxN = jnp.asarray(answers_QxN)
  if (answers_QxN.ndim != 2 or answers_QxN.shape[1] < 1
      or not jnp.issubdtype(answers_QxN.dtype, jnp.integer)):
    raise ValueError(f"answers_QxN must be a [Q, N >= 1] integer array, got {answers_QxN.dtype} "
                     f"of shape {answers_QxN.shape}")
  arrays = [jnp.asarray(x) for x in others.values()]
  for name, x in zip(others, arrays):
    if x.shape != answers_QxN.shape:
      raise ValueError(f"{name} must have the shape of answers_QxN {answers_QxN.shape}, "
                       f"got {x.shape}")
  return answers_QxN.astype(jnp.int32), *arrays


def _counted(answers_QxN, valid_QxN):
  """(counted_QxN, same_QxNxN, first_QxN): same[q, i, j] = both counted with one answer."""
  counted_QxN = jnp.asarray(valid_QxN, bool) & (answers_QxN != NO_ANSWER)
  same_QxNxN = ((answers_QxN[:, :, None] == answers_QxN[:, None, :])
                & counted_QxN[:, :, None] & counted_QxN[:, None, :])
  # Slot i is its answer's first sample when no earlier slot j < i holds the same answer.
  n = answers_QxN.shape[1]
  earlier_NxN = jnp.arange(n)[None, :] < jnp.arange(n)[:, None]  # [i, j]: j < i
  first_QxN = counted_QxN & ~jnp.any(same_QxNxN & earlier_NxN, axis=-1)
  return counted_QxN, same_QxNxN, first_QxN


def _pick(answers_QxN, first_QxN, total_QxN):
  """The answer at the first slot of the best total; argmax keeps the lowest tied slot."""
  masked_QxN = jnp.where(first_QxN, total_QxN, -jnp.inf)
  best_Q = jnp.argmax(masked_QxN, axis=-1)
  answer_Q = jnp.take_along_axis(answers_QxN, best_Q[:, None], axis=-1)[:, 0]
  return jnp.where(first_QxN.any(-1), answer_Q, NO_ANSWER).astype(jnp.int32)


def vote_totals(answers_QxN, weights_QxN, valid_QxN):
  """(total_QxN, first_QxN): each answer's summed weight, at its first counted slot.

  first_QxN marks the slot where each distinct counted answer first appears; total_QxN is that
  answer's summed weight there and 0 at every other slot. Answers (7, 3, 3, 7, NO_ANSWER) with
  unit weights: first = (T, T, F, F, F), total = (2, 2, 0, 0, 0).
  """
  answers_QxN, weights_QxN, valid_QxN = _check(answers_QxN, weights_QxN=weights_QxN,
                                                valid_QxN=valid_QxN)
  _, same_QxNxN, first_QxN = _counted(answers_QxN, valid_QxN)
  # A masked sum, not an einsum: GPUs may run float32 matmuls in TF32 and round the weights.
  total_QxN = jnp.sum(jnp.where(same_QxNxN, weights_QxN[:, None, :].astype(jnp.float32), 0.0),
                      axis=-1)
  return jnp.where(first_QxN, total_QxN, 0.0), first_QxN


def weighted_vote(answers_QxN, weights_QxN, valid_QxN):
  """answer_Q with the largest summed weight (PRM-weighted or DeepConf confidence-weighted vote).

  Weights should be >= 0; an answer's total is the sum over its counted samples.
  """
  total_QxN, first_QxN = vote_totals(answers_QxN, weights_QxN, valid_QxN)
  return _pick(jnp.asarray(answers_QxN, jnp.int32), first_QxN, total_QxN)


def majority_vote(answers_QxN, valid_QxN):
  """answer_Q held by the most counted samples (self-consistency)."""
  answers_QxN, valid_QxN = _check(answers_QxN, valid_QxN=valid_QxN)
  return weighted_vote(answers_QxN, jnp.ones(answers_QxN.shape, jnp.float32), valid_QxN)


def best_score(answers_QxN, scores_QxN, valid_QxN):
  """answer_Q of the highest-scoring counted sample (best-of-N); scores in [0, 1], no NaN."""
  answers_QxN, scores_QxN, valid_QxN = _check(answers_QxN, scores_QxN=scores_QxN,
                                               valid_QxN=valid_QxN)
  _, same_QxNxN, first_QxN = _counted(answers_QxN, valid_QxN)
  # Each answer's best score sits at its first slot, so the tie rule is the vote's.
  best_QxN = jnp.max(jnp.where(same_QxNxN, scores_QxN[:, None, :].astype(jnp.float32),
                               -jnp.inf), axis=-1)
  return _pick(answers_QxN, first_QxN, best_QxN)


def sample_scores(step_scores_NxS, step_valid_NxS, how: str):
  """One PRM score per sample from its valid steps: the last valid step's ("last") or the
  minimum ("min"). Any leading dims (...xS -> ...). A sample with no valid step scores 0.
  """
  if how not in _HOW:
    raise ValueError(f"how must be one of {_HOW}, got {how!r}")
  step_scores_NxS = jnp.asarray(step_scores_NxS, jnp.float32)
  step_valid_NxS = jnp.asarray(step_valid_NxS, bool)
  if step_scores_NxS.ndim < 1 or step_valid_NxS.shape != step_scores_NxS.shape:
    raise ValueError(f"step_scores_NxS and step_valid_NxS need one shape (last axis S), got "
                     f"{step_scores_NxS.shape} and {step_valid_NxS.shape}")
  any_N = step_valid_NxS.any(-1)
  if how == "min":
    score_N = jnp.min(jnp.where(step_valid_NxS, step_scores_NxS, jnp.inf), axis=-1)
  else:
    # The valid mask need not be a prefix: take the highest valid index.
    s = step_valid_NxS.shape[-1]
    last_N = s - 1 - jnp.argmax(step_valid_NxS[..., ::-1], axis=-1)
    score_N = jnp.take_along_axis(step_scores_NxS, last_N[..., None], axis=-1)[..., 0]
  return jnp.where(any_N, score_N, 0.0)

