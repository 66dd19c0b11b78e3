"""Answer selection against a per-question Python loop, hand-made ties and empty questions."""

import collections

import jax
import numpy as np
import pytest

from adaptive_jax.sampler import selection
from adaptive_jax.sampler.selection import NO_ANSWER


def _totals_loop(answers_N, values_N, valid_N, combine):
  """{answer: combined value} and {answer: first slot} over the counted samples."""
  totals, first = {}, {}
  for i, (a, v, ok) in enumerate(zip(answers_N, values_N, valid_N)):
    if not ok or a == NO_ANSWER:
      continue
    first.setdefault(int(a), i)
    totals[int(a)] = combine(totals[int(a)], float(v)) if int(a) in totals else float(v)
  return totals, first


def _winner(totals, first):
  if not totals:
    return NO_ANSWER
  best = max(totals.values())
  return min((a for a in totals if totals[a] == best), key=first.get)


def _majority_loop(answers_QxN, valid_QxN):
  out = []
  for answers_N, valid_N in zip(answers_QxN, valid_QxN):
    counted = [int(a) for a, ok in zip(answers_N, valid_N) if ok and a != NO_ANSWER]
    counts = collections.Counter(counted)
    if not counts:
      out.append(NO_ANSWER)
      continue
    top = max(counts.values())
    # Counter keeps first-insertion order: the first tied answer met is the lowest first slot.
    out.append(next(a for a in counts if counts[a] == top))
  return np.array(out)


def _random_inputs(seed, q=200, n=12, alphabet=3):
  rng = np.random.default_rng(seed)
  answers = rng.integers(0, alphabet, size=(q, n)).astype(np.int32)
  answers[rng.random((q, n)) < 0.15] = NO_ANSWER
  valid = rng.random((q, n)) < 0.8
  valid[:5] = False  # whole questions without a valid slot
  answers[5:8] = NO_ANSWER  # and without an answer
  return rng, answers, valid


def test_majority_matches_counter_loop():
  _, answers, valid = _random_inputs(0)
  got = jax.jit(selection.majority_vote)(answers, valid)
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, _majority_loop(answers, valid))
  assert (np.asarray(got)[:8] == NO_ANSWER).all()


def test_weighted_vote_matches_loop_with_exact_ties():
  rng, answers, valid = _random_inputs(1)
  # Quarter-multiples sum exactly in float32, so equal totals tie exactly, as in the loop.
  weights = rng.integers(0, 4, size=answers.shape).astype(np.float32) / 4
  got = jax.jit(selection.weighted_vote)(answers, weights, valid)
  want = [_winner(*_totals_loop(a, w, v, lambda x, y: x + y))
          for a, w, v in zip(answers, weights, valid)]
  np.testing.assert_array_equal(got, want)


def test_best_score_matches_loop_with_exact_ties():
  rng, answers, valid = _random_inputs(2)
  scores = rng.integers(0, 5, size=answers.shape).astype(np.float32) / 4
  got = jax.jit(selection.best_score)(answers, scores, valid)
  want = [_winner(*_totals_loop(a, s, v, max)) for a, s, v in zip(answers, scores, valid)]
  np.testing.assert_array_equal(got, want)


def test_hand_made_ties():
  x = NO_ANSWER
  answers = np.array([
      [7, 3, 3, 7, 5],  # 7 and 3 tie at 2; 7 first (slot 0)
      [x, 3, 7, 7, 3],  # 3 and 7 tie; 3 first (slot 1); NO_ANSWER at slot 0 never wins
      [x, x, 4, 4, 4],  # NO_ANSWER twice is not an answer
      [9, 8, 8, 8, 8],  # slots 2-4 invalid: 9 and 8 tie at 1; 9 first
  ], np.int32)
  valid = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)
  np.testing.assert_array_equal(selection.majority_vote(answers, valid), [7, 3, 4, 9])
  # Weighted: slot 2's 3 carries 2.0, so 3 leads 7 in row 0 (3.0 vs 2.0).
  weights = np.ones(answers.shape, np.float32)
  weights[0, 2] = 2.0
  np.testing.assert_array_equal(selection.weighted_vote(answers, weights, valid), [3, 3, 4, 9])
  # Best-of-N: 7's best (0.9 at slot 3) ties 3's best (0.9 at slot 1): 7 wins by its first slot
  # 0, though the first 0.9 sample in slot order answers 3.
  scores = np.array([[0.1, 0.9, 0.2, 0.9, 0.3]] * 4, np.float32)
  np.testing.assert_array_equal(selection.best_score(answers, scores, valid), [7, 3, 4, 8])


def test_no_valid_answer_gives_no_answer():
  answers = np.array([[NO_ANSWER] * 3, [1, 2, 3]], np.int32)
  valid = np.array([[1, 1, 1], [0, 0, 0]], bool)
  ones = np.ones((2, 3), np.float32)
  for got in (selection.majority_vote(answers, valid),
              selection.weighted_vote(answers, ones, valid),
              selection.best_score(answers, ones, valid)):
    np.testing.assert_array_equal(got, [NO_ANSWER, NO_ANSWER])


def test_vote_totals_example():
  total, first = selection.vote_totals(np.array([[7, 3, 3, 7, NO_ANSWER]], np.int32),
                                       np.ones((1, 5), np.float32), np.ones((1, 5), bool))
  np.testing.assert_array_equal(first, [[1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(total, [[2, 2, 0, 0, 0]])


def test_sample_scores():
  scores = np.array([[0.9, 0.2, 0.7, 0.5], [0.3, 0.8, 0.6, 0.1], [0.5, 0.5, 0.5, 0.5]],
                    np.float32)
  valid = np.array([[1, 1, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0]], bool)
  f = jax.jit(selection.sample_scores, static_argnames="how")
  np.testing.assert_allclose(f(scores, valid, how="last"), [0.7, 0.1, 0.0])
  np.testing.assert_allclose(f(scores, valid, how="min"), [0.2, 0.1, 0.0])
  # Leading dims: [Q, N, S] -> [Q, N], row by row the same.
  rng = np.random.default_rng(3)
  scores_QxNxS = rng.random((3, 4, 5)).astype(np.float32)
  valid_QxNxS = rng.random((3, 4, 5)) < 0.6
  for how in ("last", "min"):
    got = f(scores_QxNxS, valid_QxNxS, how=how)
    assert got.shape == (3, 4)
    flat = f(scores_QxNxS.reshape(12, 5), valid_QxNxS.reshape(12, 5), how=how)
    np.testing.assert_array_equal(got.reshape(12), flat)
    for s_S, v_S, g in zip(scores_QxNxS.reshape(12, 5), valid_QxNxS.reshape(12, 5), flat):
      kept = s_S[v_S]
      assert g == (0.0 if not len(kept) else kept[-1] if how == "last" else kept.min())


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="how"):
    selection.sample_scores(np.zeros((2, 3)), np.ones((2, 3), bool), "mean")
  with pytest.raises(ValueError, match="answers_QxN"):
    selection.majority_vote(np.zeros((2, 3), np.float32), np.ones((2, 3), bool))
  with pytest.raises(ValueError, match="weights_QxN"):
    selection.weighted_vote(np.zeros((2, 3), np.int32), np.ones((2, 4)), np.ones((2, 3), bool))
  with pytest.raises(ValueError, match="valid_QxN"):
    selection.best_score(np.zeros((2, 3), np.int32), np.ones((2, 3)), np.ones((3,), bool))
