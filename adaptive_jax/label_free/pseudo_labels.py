"""Which drawn sample each label-free arm trains on, from answers and verifier scores only.

Samples of prompt q sit in slots 0..N-1; a slot with no parsable answer (`selection.NO_ANSWER`)
or beyond the prompt's drawn count is never chosen. Each rule returns index_Q, the chosen
slot per prompt, or -1 when the prompt yields no training example.

  majority  (TTRL's pseudo-label) the first slot holding the most frequent answer;
  best      (rejection-sampling fine-tuning) the highest verifier score, ties to the first slot;
  advantages (GRPO) each sample's reward minus its group's mean, over the group's std.

Worked example, answers (7, 3, 3, NONE), scores (0.9, 0.2, 0.4, 0.95): majority -> slot 1
(answer 3, twice), best -> slot 0 (0.95 has no answer and is not counted).
"""

import numpy as np

from adaptive_jax.sampler import selection


def _check(answers_QxN, drawn_Q=None, **others):
  answers_QxN = np.asarray(answers_QxN)
  if answers_QxN.ndim != 2 or not np.issubdtype(answers_QxN.dtype, np.integer):
    raise ValueError(f"answers_QxN must be a [Q, N] integer array, got {answers_QxN.dtype} of "
                     f"shape {answers_QxN.shape}")
  q, n = answers_QxN.shape
  for name, x in others.items():
    x = np.asarray(x)
    if x.shape != (q, n) or np.isnan(x).any():
      raise ValueError(f"{name} must be a [Q, N] = {(q, n)} array without NaN, got shape "
                       f"{x.shape}")
  drawn_Q = np.full(q, n) if drawn_Q is None else np.asarray(drawn_Q)
  if drawn_Q.shape != (q,) or (drawn_Q < 0).any() or (drawn_Q > n).any():
    raise ValueError(f"drawn_Q must hold {q} counts in [0, {n}], got {drawn_Q}")
  counted_QxN = (np.arange(n)[None, :] < drawn_Q[:, None]) & (answers_QxN != selection.NO_ANSWER)
  return answers_QxN, counted_QxN


def majority(answers_QxN, drawn_Q=None) -> np.ndarray:
  """index_Q: the first slot of the most frequent answer (ties: the answer seen first)."""
  answers_QxN, counted_QxN = _check(answers_QxN, drawn_Q)
  answer_Q = np.asarray(selection.majority_vote(answers_QxN, counted_QxN))
  hit_QxN = counted_QxN & (answers_QxN == answer_Q[:, None])
  return np.where(hit_QxN.any(1), np.argmax(hit_QxN, 1), -1)


def best(answers_QxN, scores_QxN, drawn_Q=None, *, min_score: float = 0.0) -> np.ndarray:
  """index_Q: the counted slot of highest score, -1 when none or its score < min_score."""
  answers_QxN, counted_QxN = _check(answers_QxN, drawn_Q, scores_QxN=scores_QxN)
  masked_QxN = np.where(counted_QxN, np.asarray(scores_QxN, np.float64), -np.inf)
  index_Q = np.argmax(masked_QxN, 1)
  best_Q = masked_QxN[np.arange(len(index_Q)), index_Q]
  return np.where(counted_QxN.any(1) & (best_Q >= min_score), index_Q, -1)


def advantages(rewards_QxN, eps: float = 1e-6) -> np.ndarray:
  """advantage_QxN = (r - mean_q) / (std_q + eps) within each prompt's group (GRPO); a group
  whose rewards are all equal gets 0 (it carries no preference)."""
  rewards_QxN = np.asarray(rewards_QxN, np.float64)
  if rewards_QxN.ndim != 2 or rewards_QxN.shape[1] < 2 or np.isnan(rewards_QxN).any():
    raise ValueError(f"rewards_QxN must be a [Q, N >= 2] array without NaN, got shape "
                     f"{rewards_QxN.shape}")
  centered_QxN = rewards_QxN - rewards_QxN.mean(1, keepdims=True)
  std_Q = rewards_QxN.std(1)
  return np.where(std_Q[:, None] > eps, centered_QxN / (std_Q[:, None] + eps), 0.0)
