"""What every task source serves: a `Problem`, its text format, and the exact answer checker.

Text format (one example, prompt then completion):

  question: a = 7, b = a + 4, c = 6, d = b * c. d = ?   <- prompt line (`format_prompt`)
  b = 7 + 4 = 11                                        <- one step per line
  d = 11 * 6 = 66
  answer: 66                                            <- the answer line ends the solution

End of step is "\\n"; end of answer is the "\\n" after the `answer:` line, after which an LM is
trained to emit its tokenizer's EOS (the sampler's stop token). `format_completion` ends with
that "\\n".
"""

import dataclasses
import re
from typing import Protocol

STEP_END = "\n"
ANSWER_PREFIX = "answer: "
QUESTION_PREFIX = "question: "
# "answer: N" (ours) or "#### N" (GSM-style); thousands separators allowed.
_ANSWER_RE = re.compile(r"(?:answer:|####)[ \t]*(-?\d[\d,]*)")
_ANSWER_TEXT_RE = re.compile(r"answer:([^\n]*)")


@dataclasses.dataclass(frozen=True)
class Problem:
  """A question, its gold solution steps (one line each, no newlines), answer and difficulty.

  The answer is an int (our tasks, GSM) or one line of text (reasoning-gym).
  """
  question: str
  steps: tuple[str, ...]
  answer: int | str
  difficulty: int


def format_prompt(problem: Problem) -> str:
  return f"{QUESTION_PREFIX}{problem.question}{STEP_END}"


def format_completion(problem: Problem, steps: tuple[str, ...] | None = None) -> str:
  """The gold solution (or `steps` in its place) followed by the answer line."""
  steps = problem.steps if steps is None else steps
  return "".join(s + STEP_END for s in steps) + f"{ANSWER_PREFIX}{problem.answer}{STEP_END}"


def extract_answer(text: str) -> int | None:
  """The integer after the first `answer:` (or `####`) marker in `text`; None if there is none.

  The first marker counts: anything a model writes after its end of answer is ignored.
  """
  match = _ANSWER_RE.search(text)
  return None if match is None else int(match.group(1).replace(",", ""))


def extract_answer_text(text: str) -> str | None:
  """The stripped rest of the line after the first `answer:` in `text`; None if none or empty."""
  match = _ANSWER_TEXT_RE.search(text)
  return (match.group(1).strip() or None) if match else None


def is_correct(problem: Problem, completion: str) -> bool:
  """Integer answers compare as numbers, text answers as exact (stripped) text."""
  if isinstance(problem.answer, str):
    return extract_answer_text(completion) == problem.answer.strip()
  return extract_answer(completion) == problem.answer


def follows_gold_steps(problem: Problem, prefix: str) -> bool:
  """Whether `prefix` (complete solution lines, each ending in STEP_END) is the gold solution's
  first lines, exactly. Meaningful where the solution is canonical, as on the arithmetic task;
  on GSM-style text another correct wording is not gold."""
  if prefix and not prefix.endswith(STEP_END):
    raise ValueError(f"prefix must be whole lines, each ending in {STEP_END!r}, got {prefix!r}")
  lines = prefix.split(STEP_END)[:-1]
  return len(lines) <= len(problem.steps) and all(
      line == gold for line, gold in zip(lines, problem.steps))


class TaskSource(Protocol):
  """Random access to problems (a grain `RandomAccessDataSource`) plus their checker."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> Problem: ...

  def check(self, problem: Problem, completion: str) -> bool: ...
