"""The step verifier's examples (hand-labelled), its within-difficulty AUC (against brute force)
and its training (BCE on the step labels falls)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.prm import fit, step_verifier
from adaptive_jax.prm.model import PRM, encode_records

# The step_checker docstring's question: x = 26, k = 29, e = 54.
PROMPT = "question: j = 9, v = 17, x = j + v, k = x + 3, c = v + 26, e = k + 25. e = ?\n"
X, K, E = "x = 9 + 17 = 26\n", "k = 26 + 3 = 29\n", "e = 29 + 25 = 54\n"
RIGHT = K + E + "answer: 54\n"
SMALL_PROMPT = "question: a = 3, b = a * 2. b = ?\n"  # b = 6


def _record(text, rollouts, question_id=0, difficulty=3, step=1):
  return {"text": text, "rollouts": rollouts, "question_id": question_id,
          "difficulty": difficulty, "step": step, "response_correct": False}


RECORDS = [
    _record(PROMPT + X, [
        RIGHT + "z = 1 + 1 = 2\n",  # text after the answer line is dropped
        "k = 26 + 3 = 28\ne = 28 + 25 = 53\nanswer: 53\n",  # line 2 wrong, and all after it
        K + "e = 29 + 2",  # cut off by the token limit: no answer line
        RIGHT]),  # a duplicate
    _record(PROMPT, [X + RIGHT], step=0),  # the same solution from step 0: duplicates only
    _record(SMALL_PROMPT, ["b = 3 * 2 = 6\nanswer: 7\n"], question_id=1, difficulty=1),
]
# (text, label, question_id, difficulty, step, final), in order of first appearance.
EXPECTED = [
    (PROMPT + X, 1.0, 0, 3, 1, False),
    (PROMPT + X + K, 1.0, 0, 3, 2, False),
    (PROMPT + X + K + E, 1.0, 0, 3, 3, False),
    (PROMPT + X + RIGHT, 1.0, 0, 3, 4, True),
    (PROMPT + X + "k = 26 + 3 = 28\n", 0.0, 0, 3, 2, False),
    (PROMPT + X + "k = 26 + 3 = 28\ne = 28 + 25 = 53\n", 0.0, 0, 3, 3, False),
    (PROMPT + X + "k = 26 + 3 = 28\ne = 28 + 25 = 53\nanswer: 53\n", 0.0, 0, 3, 4, True),
    (PROMPT + X + K + "e = 29 + 2", 0.0, 0, 3, 3, False),
    (SMALL_PROMPT + "b = 3 * 2 = 6\n", 1.0, 1, 1, 1, False),
    (SMALL_PROMPT + "b = 3 * 2 = 6\nanswer: 7\n", 0.0, 1, 1, 2, True),
]


def test_step_examples_match_hand_labels():
  examples = step_verifier.step_examples(RECORDS)
  got = [(e["text"], e["label"], e["question_id"], e["difficulty"], e["step"], e["final"])
         for e in examples]
  assert got == EXPECTED


def _brute_auc(scores, labels, difficulty):
  """Pairs (positive, negative) of one difficulty: 1 if the positive scores higher, 1/2 tied."""
  wins = pairs = 0.0
  for i in range(len(scores)):
    for j in range(len(scores)):
      if labels[i] and not labels[j] and difficulty[i] == difficulty[j]:
        wins += 1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0
        pairs += 1
  return wins / pairs


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force_with_ties(seed):
  rng = np.random.default_rng(seed)
  n = 60
  scores = np.round(rng.random(n), 1)  # 11 values among 60 rows: many ties
  labels = rng.random(n) < 0.4
  difficulty = rng.integers(1, 4, n)
  u, pairs = step_verifier.mann_whitney(scores, labels)
  assert u / pairs == pytest.approx(_brute_auc(scores, labels, np.zeros(n)), abs=1e-12)
  result = step_verifier.within_difficulty_auc(scores, labels, difficulty)
  assert result["pooled"] == pytest.approx(_brute_auc(scores, labels, difficulty), abs=1e-12)
  for d, entry in result["by_difficulty"].items():
    rows = difficulty == int(d)
    assert entry["auc"] == pytest.approx(_brute_auc(scores[rows], labels[rows], np.zeros(n)),
                                         abs=1e-12)
    assert (entry["positive"], entry["negative"]) == (labels[rows].sum(), (~labels[rows]).sum())


def test_pairs_stay_within_a_difficulty():
  # Difficulty 1 scores high, difficulty 2 low; inside each the positives score higher. Pairs
  # across difficulties (a positive of 2 against a negative of 1) would be misordered.
  scores = np.array([0.9, 0.8, 0.85, 0.3, 0.25, 0.2, 0.5])
  labels = np.array([1, 0, 0, 1, 1, 0, 1])
  difficulty = np.array([1, 1, 1, 2, 2, 2, 3])  # difficulty 3: positives only, skipped
  result = step_verifier.within_difficulty_auc(scores, labels, difficulty)
  assert result["pooled"] == 1.0
  assert result["by_difficulty"]["1"]["auc"] == result["by_difficulty"]["2"]["auc"] == 1.0
  assert result["by_difficulty"]["3"] == {"auc": None, "positive": 1, "negative": 0}
  assert result["skipped"] == ["3"]
  u, pairs = step_verifier.mann_whitney(scores, labels)  # pairs across difficulties too
  assert u / pairs == _brute_auc(scores, labels, np.zeros(7)) == 0.5


def test_final_answer_auc_reads_finals_only():
  examples = step_verifier.step_examples(RECORDS)
  # Finals: right (difficulty 3), wrong (3), wrong (1). Non-finals get scores that would
  # reverse the order if they were read.
  scores = np.array([0.0 if e["final"] else (1.0 - e["label"]) for e in examples])
  scores[[i for i, e in enumerate(examples) if e["final"] and e["label"]]] = 0.6
  scores[[i for i, e in enumerate(examples) if e["final"] and not e["label"]]] = 0.4
  result = step_verifier.final_answer_auc(scores, examples)
  assert result["by_difficulty"]["3"] == {"auc": 1.0, "positive": 1, "negative": 1}
  assert result["by_difficulty"]["1"] == {"auc": None, "positive": 0, "negative": 1}
  assert result["pooled"] == 1.0 and result["skipped"] == ["1"]
  assert step_verifier.within_difficulty_auc(
      scores, [e["label"] for e in examples], [e["difficulty"] for e in examples])["pooled"] < 0.5
  with pytest.raises(ValueError, match="scores_N has 2 entries for 10 examples"):
    step_verifier.final_answer_auc(scores[:2], examples)


CFG = ModelConfig(vocab_size=259, num_layers=1, d_model=32, num_heads=2, head_dim=16,
                  d_ff_big=64, d_ff_small=0, max_len=160, duo=False)


def _bce(params, examples):
  tokens_NxT = encode_records(examples, CFG.max_len)
  logit_N = PRM(CFG).apply({"params": params}, jnp.asarray(tokens_NxT))[:, 0]
  labels_N = jnp.array([e["label"] for e in examples])
  return float(jnp.mean(optax.sigmoid_binary_cross_entropy(logit_N, labels_N)))


def test_training_on_step_labels_lowers_their_bce():
  examples = step_verifier.step_examples(RECORDS)
  tokens_NxT = encode_records(examples, CFG.max_len)
  initial = fit.init_params(CFG, 0, tokens_NxT.shape[1], seed=0)  # train_base_prm's start
  trained, _ = fit.train_base_prm(examples, CFG, steps=200, batch_size=8, learning_rate=1e-2,
                                  seed=0, adapter="head", label_field="label")
  assert _bce(trained, examples) < 0.8 * _bce(initial, examples)  # 0.76 -> 0.55 measured
  # The BCE of the trained params as fit.predict reads them.
  p_N = fit.predict(trained, CFG, examples)[:, 0]
  labels_N = np.array([e["label"] for e in examples])
  np.testing.assert_allclose(
      -np.mean(labels_N * np.log(p_N) + (1 - labels_N) * np.log(1 - p_N)),
      _bce(trained, examples), rtol=1e-3)
  with pytest.raises(ValueError, match="record 0 has no field 'response_correct'"):
    fit.train_base_prm(examples, CFG, steps=1, batch_size=8, learning_rate=3e-3, seed=0)


def test_solution_examples_carry_every_prefix_label_of_step_examples():
  """One row per distinct solution, read at its line ends, gives the labels of the prefix rows
  (an independent path: step_examples cuts the text, encode_solutions reads token positions)."""
  solutions = step_verifier.solution_examples(RECORDS)
  assert len(solutions) == 4  # question 0: right, wrong from line 2, cut off; question 1
  tokens_NxT, positions_NxL, labels_NxL, mask_NxL = step_verifier.encode_solutions(
      solutions, CFG.max_len)
  by_text = {e["text"]: e for e in step_verifier.step_examples(RECORDS)}
  seen = set()
  for i, e in enumerate(solutions):
    for k in np.flatnonzero(mask_NxL[i]):
      prefix = e["text"][:e["line_ends"][k]]
      last = encode_records([{"text": prefix}], CFG.max_len)[0, -1]
      assert last == tokens_NxT[i, positions_NxL[i, k]]
      assert labels_NxL[i, k] == by_text[prefix]["label"]
      seen.add(prefix)
    assert e["final"] == by_text[e["text"]]["final"]
  assert seen == set(by_text)  # every prefix row
  # 4 + 4 + 3 + 2 lines: question 0's shared first lines are read in each of its solutions.
  assert mask_NxL.sum() == 13 and len(by_text) == 10


def test_dense_training_fits_the_loss_of_the_prefix_rows():
  """At the start, the dense loss is the mean BCE of the prefix rows' own readouts (checked
  through the first loss); training lowers that per-prefix BCE."""
  solutions = step_verifier.solution_examples(RECORDS)
  examples = step_verifier.step_examples(RECORDS)
  tokens_NxT = encode_records(examples, CFG.max_len)
  initial = fit.init_params(CFG, 0, tokens_NxT.shape[1], seed=0)
  _, first = fit.train_step_verifier(solutions, CFG, steps=1, batch_size=256,
                                     learning_rate=1e-2, seed=0, adapter="full")
  # A batch of 256 draws from 4 rows with replacement: the loss is near the pooled BCE.
  assert first[0] == pytest.approx(_bce(initial, examples), rel=0.15)
  trained, losses = fit.train_step_verifier(solutions, CFG, steps=60, batch_size=4,
                                            learning_rate=1e-2, seed=0, adapter="full")
  assert np.all(np.isfinite(losses))
  assert _bce(trained, examples) < 0.5 * _bce(initial, examples)
