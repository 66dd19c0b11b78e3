"""A learned step verifier: a PRM trained on exact per-step correctness labels.

PRM800K has people label every step of sampled solutions; on the arithmetic task the rule
checker (tasks/step_checker.py) gives the same labels exactly and for free. `step_examples`
turns MC records (mc_data.py) into such examples: every complete solution the records hold (a
record's prefix followed by one of its rollouts) is cut after each of its lines, and the prefix
of k lines is labelled 1 when all k lines are true (`step_prefix_labels`). The verifier trains
on them with `fit.train_base_prm(..., label_field="label")`; `final_answer_auc` asks how well
scores of whole solutions separate right final answers from wrong ones within each difficulty.

Worked example (one record at step 1 of the step_checker docstring's question, one rollout):

  text     "question: j = 9, ... e = ?\nx = 9 + 17 = 26\n"
  rollout  "k = 26 + 3 = 28\ne = 28 + 25 = 53\nanswer: 53\n"
  examples k=1 "...x = 9 + 17 = 26\n"  label 1, final False
           k=2 "... k = 26 + 3 = 28\n" label 0, final False
           k=3 "... e = 28 + 25 = 53\n" label 0, final False
           k=4 "... answer: 53\n"       label 0, final True
"""

from collections.abc import Sequence

import numpy as np
import scipy.stats

from adaptive_jax.policy.prompt import encode_prompt
from adaptive_jax.prm.model import TOKENIZER, encode_texts
from adaptive_jax.tasks.step_checker import ANSWER_START, solution_lines, step_prefix_labels


def _prefix_ends(solution: str, lines: Sequence[str]) -> list[int]:
  """End offset in `solution` of each of its first lines, past the line's "\\n" where it has
  one (an unfinished last line, cut off by the token limit, ends without one)."""
  ends, pos = [], 0
  for line in lines:
    pos += len(line)
    if solution[pos:pos + 1] == "\n":
      pos += 1
    ends.append(pos)
  return ends


def step_examples(records: Sequence[dict]) -> list[dict]:
  """Labelled step prefixes of every solution in `records` (MC records), one per distinct text.

  Each is {"text": prompt + the solution's first k lines, "label": 1.0 when those k lines are
  all correct else 0.0, "difficulty", "question_id", "step": k, "final": whether line k is the
  answer line}; k = 1..L over the solution's lines up to its first answer line (the text after
  it is dropped). A solution with no answer line yields its lines, none of them final.
  """
  examples, seen = [], set()
  for record in records:
    text = record["text"]
    prompt = text[:text.index("\n") + 1]  # "question: ...\n", the record's first line
    for rollout in record["rollouts"]:
      solution = text[len(prompt):] + rollout
      lines = solution_lines(solution)
      labels = step_prefix_labels(prompt, solution)
      for k, (end, label) in enumerate(zip(_prefix_ends(solution, lines), labels), start=1):
        prefix = prompt + solution[:end]
        if prefix in seen:
          continue
        seen.add(prefix)
        examples.append({"text": prefix, "label": float(label),
                         "difficulty": record["difficulty"],
                         "question_id": record["question_id"], "step": k,
                         "final": k == len(lines) and lines[-1].startswith(ANSWER_START)})
  return examples


def solution_examples(records: Sequence[dict]) -> list[dict]:
  """The same labels as `step_examples`, one example per distinct solution instead of per prefix.

  Each is {"text": prompt + the solution's lines up to its first answer line, "line_ends": the
  end offset in `text` of each line (past its "\n" where it has one), "labels": per line, 1.0
  when the lines up to it are all correct, "difficulty", "question_id", "final": whether the
  last line is the answer line}. A solution of L lines is read once for its L labels
  (`encode_solutions`, `fit.train_step_verifier`), where `step_examples` makes L rows of it.
  """
  examples, seen = [], set()
  for record in records:
    text = record["text"]
    prompt = text[:text.index("\n") + 1]
    for rollout in record["rollouts"]:
      solution = text[len(prompt):] + rollout
      lines = solution_lines(solution)
      if not lines:
        continue
      ends = _prefix_ends(solution, lines)
      whole = prompt + solution[:ends[-1]]
      if whole in seen:
        continue
      seen.add(whole)
      examples.append({"text": whole, "line_ends": tuple(len(prompt) + e for e in ends),
                       "labels": tuple(float(x) for x in step_prefix_labels(prompt, solution)),
                       "difficulty": record["difficulty"], "question_id": record["question_id"],
                       "final": lines[-1].startswith(ANSWER_START)})
  return examples


def encode_solutions(examples: Sequence[dict], max_len: int, *, tokenizer=TOKENIZER):
  """(tokens_NxT, positions_NxL, labels_NxL, mask_NxL) of `solution_examples`: each text as the
  PRM reads it (`model.encode_texts`), the token index of each line's last token, its label, and
  which of the L = most lines entries are real. ValueError when the tokenizer merges a line's
  last token with the next line's first (no token ends the line)."""
  if not examples:
    raise ValueError("examples must be non-empty")
  tokens_NxT = encode_texts([e["text"] for e in examples], max_len, tokenizer=tokenizer)
  num_lines = max(len(e["line_ends"]) for e in examples)
  positions_NxL = np.zeros((len(examples), num_lines), np.int32)
  labels_NxL = np.zeros((len(examples), num_lines), np.float32)
  mask_NxL = np.zeros((len(examples), num_lines), bool)
  for i, e in enumerate(examples):
    if len(e["labels"]) != len(e["line_ends"]):
      raise ValueError(f"example {i} has {len(e['labels'])} labels for "
                       f"{len(e['line_ends'])} line_ends")
    for k, end in enumerate(e["line_ends"]):
      prefix = encode_prompt(tokenizer, e["text"][:end])
      if list(tokens_NxT[i, :len(prefix)]) != prefix:
        raise ValueError(f"example {i}: the tokenizer merges the end of line {k + 1} with the "
                         "text after it, so no token ends that line")
      positions_NxL[i, k], labels_NxL[i, k], mask_NxL[i, k] = len(prefix) - 1, e["labels"][k], True
  return tokens_NxT, positions_NxL, labels_NxL, mask_NxL


def mann_whitney(scores_N, labels_N) -> tuple[float, int]:
  """(U, pairs): over the pairs (positive, negative), U counts those where the positive scores
  higher, ties 1/2; AUC = U / pairs. From average ranks, O(N log N)."""
  scores_N, labels_N = np.asarray(scores_N, np.float64), np.asarray(labels_N, bool)
  num_pos, num_neg = int(labels_N.sum()), int((~labels_N).sum())
  if not num_pos or not num_neg:
    return 0.0, 0
  # A positive's average rank minus its rank among the positives counts the negatives below
  # it, ties 1/2 (scores 0.2, 0.5, 0.5 with the second positive: rank 2.5 - 1 = 1.5).
  ranks_N = scipy.stats.rankdata(scores_N)
  u = float(ranks_N[labels_N].sum()) - num_pos * (num_pos + 1) / 2
  return u, num_pos * num_neg


def within_difficulty_auc(scores_N, labels_N, difficulty_N) -> dict:
  """AUC of label-1 over label-0 rows, pairing rows of one difficulty only (so knowing the
  difficulty alone scores 0.5): {"by_difficulty": {d: {"auc", "positive", "negative"}},
  "pooled": every within-difficulty pair counted together, "skipped": difficulties with one
  class only (their "auc" is None)}. "pooled" is None when no difficulty has both classes."""
  scores_N, labels_N = np.asarray(scores_N, np.float64), np.asarray(labels_N) > 0.5
  difficulty_N = np.asarray(difficulty_N)
  by_difficulty, skipped, u_total, pairs_total = {}, [], 0.0, 0
  for d in sorted(set(difficulty_N.tolist())):
    rows = difficulty_N == d
    u, pairs = mann_whitney(scores_N[rows], labels_N[rows])
    by_difficulty[str(d)] = {"auc": u / pairs if pairs else None,
                             "positive": int(labels_N[rows].sum()),
                             "negative": int((~labels_N[rows]).sum())}
    if not pairs:
      skipped.append(str(d))
    u_total, pairs_total = u_total + u, pairs_total + pairs
  return {"by_difficulty": by_difficulty,
          "pooled": u_total / pairs_total if pairs_total else None, "skipped": skipped}


def final_answer_auc(scores_N, examples: Sequence[dict]) -> dict:
  """`within_difficulty_auc` over the examples with final=True: right vs wrong final answers
  (whole solutions ending in an answer line), scored by `scores_N` (one per example)."""
  scores_N = np.asarray(scores_N)
  if len(scores_N) != len(examples):
    raise ValueError(f"scores_N has {len(scores_N)} entries for {len(examples)} examples")
  final_N = np.array([e["final"] for e in examples], bool)
  return within_difficulty_auc(scores_N[final_N], [e["label"] for e in examples if e["final"]],
                               [e["difficulty"] for e in examples if e["final"]])
