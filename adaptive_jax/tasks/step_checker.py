"""An exact rule verifier for the arithmetic task: labels every solution line from the question.

It reads only the question text and the completion (never `Problem.answer` or `.steps`), so it
also serves on unlabelled questions. It stands in for a perfect process verifier (PRM): it reads
the question's definitions, so it knows every variable's value and the answer; it is
oracle-grade only because on this task every line can be checked exactly.

Worked example (the `arithmetic` docstring's problem, second result miswritten as 28):

  question: j = 9, v = 17, x = j + v, k = x + 3, c = v + 26, e = k + 25. e = ?
  x = 9 + 17 = 26     True   x is j + v and 9 + 17 = 26
  k = 26 + 3 = 28     False  26 + 3 is 29
  e = 28 + 25 = 53    False  k's value is 29, not 28: a carried error is an error
  answer: 53          False  e = 54

  line_labels -> (True, False, False, False); step_prefix_labels -> the same;
  score -> 1 / 4 (one line before the first wrong one, out of four).

A line is judged on its own against the true values, so labels are independent of each other:
after the wrong line above, "e = 29 + 25 = 54" would be True. A correct computation of a
variable off the chain (a distractor such as "c = 17 + 26 = 43"), a repeated step, or one out
of order is also True: it is a true statement, just not progress; `score` and
`step_prefix_labels` only ask whether every line so far is true. Lines must read exactly as the
generator writes them (single spaces, integers without leading zeros), the answer line too, so
"answer:  54" or "answer: 54." is False even though `problem.is_correct` accepts it.
"""

import dataclasses
import operator
import re

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_NAME = r"[A-Za-z_]\w*"
_TERM = rf"(\d+|{_NAME})"  # a literal or a variable, in the question
_NUM = r"(0|-?[1-9]\d*)"  # an integer as the generator writes it, in the solution
_QUESTION_RE = re.compile(rf"(.+)\. ({_NAME}) = \?", re.ASCII)
_DEFINITION_RE = re.compile(rf"({_NAME}) = {_TERM}(?: ([-+*]) {_TERM})?", re.ASCII)
_STEP_RE = re.compile(rf"({_NAME}) = {_NUM} ([-+*]) {_NUM} = {_NUM}", re.ASCII)
_ANSWER_RE = re.compile(rf"answer: {_NUM}", re.ASCII)
QUESTION_PREFIX, ANSWER_START = "question: ", "answer:"


@dataclasses.dataclass(frozen=True)
class Question:
  """Definitions in question order (name -> literal int or (left, op, right), an operand being a
  variable name or an int), every variable's exact value, and the asked variable."""
  definitions: dict[str, int | tuple[str | int, str, str | int]]
  values: dict[str, int]
  asked: str


def parse_question(question: str) -> Question:
  """The question text (with or without "question: " and a trailing newline) parsed; ValueError
  naming the fault unless it is a question of this task."""
  text = question.removeprefix(QUESTION_PREFIX).rstrip("\n")
  match = _QUESTION_RE.fullmatch(text)
  if match is None:
    raise ValueError(f"not an arithmetic question ('<definitions>. <name> = ?'): {question!r}")
  body, asked = match.groups()
  definitions, values = {}, {}
  for i, definition in enumerate(body.split(", ")):
    parsed = _DEFINITION_RE.fullmatch(definition)
    if parsed is None:
      raise ValueError(f"definition {i} {definition!r} is neither '<name> = <int>' nor "
                       f"'<name> = <operand> <op> <operand>' with op in + - *")
    name, left, op, right = parsed.groups()
    if name in definitions:
      raise ValueError(f"variable {name!r} is defined twice in {question!r}")
    operands = [int(t) if t.isdigit() else t for t in (left, right) if t is not None]
    for t in operands:
      if isinstance(t, str) and t not in values:
        raise ValueError(f"definition {definition!r} uses {t!r} before it is defined")
    numbers = [values[t] if isinstance(t, str) else t for t in operands]
    definitions[name] = (operands[0], op, operands[1]) if op else numbers[0]
    values[name] = _OPS[op](*numbers) if op else numbers[0]
  if asked not in values:
    raise ValueError(f"asked variable {asked!r} is not defined in {question!r}")
  return Question(definitions=definitions, values=values, asked=asked)


def solution_lines(completion: str) -> list[str]:
  """The completion's lines, up to and including the first one starting with "answer:"."""
  lines = completion.split("\n")
  if lines[-1] == "":
    lines.pop()  # the text after the final "\n" is no line
  for i, line in enumerate(lines):
    if line.startswith(ANSWER_START):
      return lines[:i + 1]
  return lines


def _line_correct(q: Question, line: str) -> bool:
  """Whether one line is a true step or the right answer line."""
  if line.startswith(ANSWER_START):
    match = _ANSWER_RE.fullmatch(line)
    return match is not None and int(match.group(1)) == q.values[q.asked]
  match = _STEP_RE.fullmatch(line)
  if match is None or not isinstance(q.definitions.get(match.group(1)), tuple):
    return False
  name, a, op, b, r = match.groups()
  left, def_op, right = q.definitions[name]
  value = lambda t: q.values[t] if isinstance(t, str) else t
  a, b, r = int(a), int(b), int(r)
  return op == def_op and a == value(left) and b == value(right) and r == _OPS[op](a, b)


def line_labels(question: str, completion: str) -> tuple[bool, ...]:
  """Whether each solution line of `completion` is correct (see the module docstring)."""
  q = parse_question(question)
  return tuple(_line_correct(q, line) for line in solution_lines(completion))


def step_prefix_labels(question: str, completion: str) -> tuple[bool, ...]:
  """For k = 1..number of lines, whether the first k lines are all correct."""
  labels, ok = [], True
  for label in line_labels(question, completion):
    ok = ok and label
    labels.append(ok)
  return tuple(labels)


def score(question: str, completion: str) -> float:
  """Fraction of lines before the first wrong one, a missing answer line counting as one more
  wrong line at the end: 1.0 exactly when every line is right and the answer line is there."""
  lines = solution_lines(completion)
  prefix = step_prefix_labels(question, completion)
  has_answer = bool(lines) and lines[-1].startswith(ANSWER_START)
  return sum(prefix) / (len(prefix) + (0 if has_answer else 1))
