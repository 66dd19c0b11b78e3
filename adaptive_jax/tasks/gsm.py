"""GSM-style problems from JSONL records {"question": ..., "answer": "steps...\\n#### N"}."""

import json
import operator
import os
import re

from adaptive_jax.tasks.problem import Problem, extract_answer, is_correct

_CALCULATOR_RE = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations, e.g. <<48/2=24>>


def parse_record(record: dict) -> Problem:
  """One record -> Problem; difficulty is the number of solution steps (lines before ####)."""
  solution, marker, _ = record["answer"].partition("####")
  answer = extract_answer(record["answer"])
  if not marker or answer is None:
    raise ValueError(f"GSM answer must end with '#### <integer>', got {record['answer']!r}")
  steps = tuple(line.strip() for line in _CALCULATOR_RE.sub("", solution).splitlines()
                if line.strip())
  return Problem(question=" ".join(record["question"].split()), steps=steps, answer=answer,
                 difficulty=len(steps))


class GsmSource:
  """All problems of a JSONL file, held in memory (GSM8K's test split is 1319 records)."""

  def __init__(self, path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
      self._problems = tuple(parse_record(json.loads(line)) for line in f if line.strip())

  def __len__(self) -> int:
    return len(self._problems)

  def __getitem__(self, index) -> Problem:
    return self._problems[operator.index(index)]

  def check(self, problem: Problem, completion: str) -> bool:
    return is_correct(problem, completion)
