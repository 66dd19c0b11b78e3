"""The step checker against the generator's answers and gold steps, hand-computed labels,
corruptions, and the task's own answer checker `is_correct`."""

import random
import re

import pytest

from adaptive_jax.tasks import arithmetic
from adaptive_jax.tasks.problem import format_completion, format_prompt, is_correct
from adaptive_jax.tasks.step_checker import (
  line_labels,
  parse_question,
  score,
  solution_lines,
  step_prefix_labels,
)

DIFFICULTIES = range(arithmetic.MIN_DIFFICULTY, arithmetic.MAX_DIFFICULTY + 1)
PROBLEMS = [arithmetic.generate((7, i), d) for d in DIFFICULTIES for i in range(40)]

# The arithmetic docstring's example, written out by hand (not from the generator).
EXAMPLE = "j = 9, v = 17, x = j + v, k = x + 3, c = v + 26, e = k + 25. e = ?"
GOLD = "x = 9 + 17 = 26\nk = 26 + 3 = 29\ne = 29 + 25 = 54\nanswer: 54\n"
T, F = True, False


def test_gold_completions_are_all_true_and_values_match_the_generator():
  for problem in PROBLEMS:
    gold = format_completion(problem)
    for question in (problem.question, format_prompt(problem)):
      q = parse_question(question)
      assert q.values[q.asked] == problem.answer
      assert line_labels(question, gold) == (True,) * (len(problem.steps) + 1)
      assert step_prefix_labels(question, gold) == (True,) * (len(problem.steps) + 1)
      assert score(question, gold) == 1.0
    assert parse_question(format_prompt(problem)) == parse_question(problem.question)


def test_parse_question_by_hand():
  q = parse_question("question: " + EXAMPLE + "\n")
  assert q.definitions == {"j": 9, "v": 17, "x": ("j", "+", "v"), "k": ("x", "+", 3),
                           "c": ("v", "+", 26), "e": ("k", "+", 25)}
  assert q.values == {"j": 9, "v": 17, "x": 26, "k": 29, "c": 43, "e": 54}
  assert q.asked == "e"
  q = parse_question("a = 50, b = a - 8, c = 6, d = b * c. d = ?")
  assert q.values == {"a": 50, "b": 42, "c": 6, "d": 252} and q.asked == "d"


def test_hand_examples():
  # problem.py's docstring example: a variable right operand and multiplication.
  question = "a = 7, b = a + 4, c = 6, d = b * c. d = ?"
  assert line_labels(question, "b = 7 + 4 = 11\nd = 11 * 6 = 66\nanswer: 66\n") == (T, T, T)
  assert line_labels("a = 50, b = a - 8. b = ?", "b = 50 - 8 = 42\nanswer: 42") == (T, T)
  # Second result miswritten as 28: the next line carries 28, but k's value is 29.
  wrong = "x = 9 + 17 = 26\nk = 26 + 3 = 28\ne = 28 + 25 = 53\nanswer: 53\n"
  assert line_labels(EXAMPLE, wrong) == (T, F, F, F)
  assert step_prefix_labels(EXAMPLE, wrong) == (T, F, F, F)
  assert score(EXAMPLE, wrong) == 1 / 4
  # Labels are per line: after the slip, true lines are True again; the prefix labels are not.
  recovered = "x = 9 + 17 = 26\nk = 26 + 3 = 28\ne = 29 + 25 = 54\nanswer: 54\n"
  assert line_labels(EXAMPLE, recovered) == (T, F, T, T)
  assert step_prefix_labels(EXAMPLE, recovered) == (T, F, F, F)
  assert score(EXAMPLE, recovered) == 1 / 4


def _replace_line(i, line):
  lines = GOLD.split("\n")
  lines[i] = line
  return "\n".join(lines)


@pytest.mark.parametrize("line, label", [
    ("x = 9 + 17 = 26", T),
    ("x = 9 + 17 = 27", F),  # one digit of the result
    ("x = 9 + 17 = 36", F),
    ("x = 9 * 17 = 153", F),  # op swapped, arithmetic right
    ("x = 9 - 17 = -8", F),
    ("x = 9 + 18 = 27", F),  # wrong value of v, arithmetic right
    ("x = 17 + 9 = 26", F),  # operands in the definition's order only
    ("x = 9 + 17 = 26 ", F),  # malformed: spacing, leading zeros, missing parts
    ("x = 9+17 = 26", F),
    ("x  = 9 + 17 = 26", F),
    ("x = 09 + 17 = 26", F),
    ("x = 9 + 17", F),
    ("x = j + v = 26", F),
    ("x = 26", F),
    ("", F),
    ("j = 9", F),  # restating a literal definition is no step
    ("j = 9 + 0 = 9", F),
    ("z = 1 + 1 = 2", F),  # undefined variable
    ("c = 17 + 26 = 43", T),  # a distractor computed correctly is a true line
    ("c = 17 + 26 = 44", F),
])
def test_first_line_corruptions(line, label):
  completion = _replace_line(0, line)
  assert line_labels(EXAMPLE, completion) == (label, T, T, T)
  assert score(EXAMPLE, completion) == (1.0 if label else 0.0)


@pytest.mark.parametrize("answer_line, label", [
    ("answer: 54", T), ("answer: 55", F), ("answer: 29", F), ("answer: -54", F),
    ("answer:54", F), ("answer:  54", F), ("answer: 054", F), ("answer: 54.", F),
    ("answer: 54 ", F), ("answer: 5,4", F), ("answer: ", F), ("answer:", F),
])
def test_answer_line(answer_line, label):
  completion = _replace_line(3, answer_line)
  assert line_labels(EXAMPLE, completion) == (T, T, T, label)
  assert score(EXAMPLE, completion) == (1.0 if label else 3 / 4)


def test_line_splitting_and_missing_answer():
  assert line_labels(EXAMPLE, "") == () and step_prefix_labels(EXAMPLE, "") == ()
  assert score(EXAMPLE, "") == 0.0
  assert score(EXAMPLE, "\n") == 0.0 and line_labels(EXAMPLE, "\n") == (F,)  # an empty line
  no_answer = "x = 9 + 17 = 26\nk = 26 + 3 = 29\ne = 29 + 25 = 54\n"
  assert line_labels(EXAMPLE, no_answer) == (T, T, T)
  assert score(EXAMPLE, no_answer) == 3 / 4  # the missing answer line counts as wrong
  assert score(EXAMPLE, no_answer.rstrip("\n")) == 3 / 4
  assert score(EXAMPLE, GOLD.rstrip("\n")) == 1.0  # a final line without "\n" counts
  # Everything after the first answer line is ignored.
  tail = GOLD + "x = 1 + 1 = 3\nanswer: 7\n"
  assert line_labels(EXAMPLE, tail) == (T, T, T, T) and score(EXAMPLE, tail) == 1.0
  assert line_labels(EXAMPLE, "answer: 7\n" + GOLD) == (F,)
  # An empty line in the middle is a wrong line.
  gap = "x = 9 + 17 = 26\n\nk = 26 + 3 = 29\ne = 29 + 25 = 54\nanswer: 54\n"
  assert line_labels(EXAMPLE, gap) == (T, F, T, T, T) and score(EXAMPLE, gap) == 1 / 5
  # Distractors, repeats and reordering are true lines; so is a bare correct answer.
  extra = "c = 17 + 26 = 43\ne = 29 + 25 = 54\nx = 9 + 17 = 26\n" + GOLD
  assert line_labels(EXAMPLE, extra) == (T,) * 7 and score(EXAMPLE, extra) == 1.0
  assert score(EXAMPLE, "answer: 54\n") == 1.0
  assert solution_lines("a\nanswer: 1\nb") == ["a", "answer: 1"]


def _corrupt(rng: random.Random, gold: str) -> str:
  """One random corruption of a gold completion."""
  lines = gold.split("\n")[:-1]
  i = rng.randrange(len(lines))
  kind = rng.randrange(7)
  if kind == 0:  # change one digit
    digits = [m.start() for m in re.finditer(r"\d", lines[i])]
    p = rng.choice(digits)
    lines[i] = lines[i][:p] + rng.choice("0123456789".replace(lines[i][p], "")) + lines[i][p + 1:]
  elif kind == 1:  # swap the op of a step
    lines[i] = re.sub(r" [-+*] ", lambda m: " " + rng.choice("+-*".replace(m[0][1], "")) + " ",
                      lines[i], count=1)
  elif kind == 2:
    del lines[i]
  elif kind == 3:
    lines.insert(i, lines[rng.randrange(len(lines))])
  elif kind == 4:
    j = rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
  elif kind == 5:  # truncate anywhere
    return gold[:rng.randrange(len(gold))]
  else:  # a wrong answer
    lines[-1] = f"answer: {int(lines[-1].split()[-1]) + rng.choice([-2, -1, 1, 2])}"
  return "".join(line + "\n" for line in lines)


def test_consistent_with_is_correct_under_random_corruptions():
  rng = random.Random(0)
  perfect = answered = 0
  for problem in PROBLEMS:
    gold = format_completion(problem)
    for _ in range(5):
      completion = _corrupt(rng, gold)
      labels, s = line_labels(problem.question, completion), score(problem.question, completion)
      assert 0.0 <= s <= 1.0
      if s == 1.0:
        perfect += 1
        assert is_correct(problem, completion)
      lines = solution_lines(completion)
      if lines and lines[-1].startswith("answer:"):
        answered += 1
        assert labels[-1] == is_correct(problem, completion)
  assert 0 < perfect < answered < 5 * len(PROBLEMS)  # both outcomes were exercised


def test_one_digit_changes_only_that_lines_label():
  rng = random.Random(1)
  for problem in PROBLEMS[::4]:
    lines = format_completion(problem).split("\n")[:-1]
    i = rng.randrange(len(lines))
    p = rng.choice([m.start() for m in re.finditer(r"\d", lines[i])])
    lines[i] = lines[i][:p] + str((int(lines[i][p]) + rng.randrange(1, 10)) % 10) + lines[i][p + 1:]
    expected = tuple(j != i for j in range(len(lines)))
    assert line_labels(format_prompt(problem), "\n".join(lines)) == expected
    assert score(problem.question, "\n".join(lines)) == i / len(lines)


@pytest.mark.parametrize("question, message", [
    ("", "not an arithmetic question"),
    ("what is 2 + 2?", "not an arithmetic question"),
    ("a = 1, b = a + 2", "not an arithmetic question"),  # no "<name> = ?"
    ("answer: 3", "not an arithmetic question"),
    ("a = 1, b = a / 2. b = ?", r"definition 1 'b = a / 2' is neither"),
    ("a = 1, b = a + 2 + 3. b = ?", "definition 1"),
    ("a = 1,b = a + 2. b = ?", "definition 0"),
    ("a = -1. a = ?", "definition 0"),
    ("a = 1, a = 2. a = ?", "'a' is defined twice"),
    ("a = b + 1, b = 2. a = ?", "uses 'b' before it is defined"),
    ("a = a + 1. a = ?", "uses 'a' before it is defined"),
    ("a = 1, b = a + 2. z = ?", "asked variable 'z' is not defined"),
])
def test_bad_questions_raise(question, message):
  with pytest.raises(ValueError, match=message):
    parse_question(question)
  with pytest.raises(ValueError, match=message):
    line_labels(question, "answer: 1\n")
