"""The arithmetic task against Python's own evaluation of its questions; checker; GSM adapter."""

import json
import re

import grain
import numpy as np
import pytest

from adaptive_jax.tasks import arithmetic, gsm
from adaptive_jax.tasks.problem import (
  Problem,
  extract_answer,
  follows_gold_steps,
  format_completion,
  format_prompt,
  is_correct,
)

DIFFICULTIES = range(arithmetic.MIN_DIFFICULTY, arithmetic.MAX_DIFFICULTY + 1)
PROBLEMS = [arithmetic.generate(seed, d) for d in DIFFICULTIES for seed in range(40)]


def _definitions(question: str) -> tuple[list[tuple[str, str]], str]:
  """'a = 3, b = a + 4. b = ?' -> ([('a', '3'), ('b', 'a + 4')], 'b')."""
  body, target = re.fullmatch(r"(.*)\. (\w) = \?", question).groups()
  return [tuple(d.split(" = ")) for d in body.split(", ")], target


def test_answer_equals_python_eval_of_the_question():
  for problem in PROBLEMS:
    env = {}
    for name, expr in _definitions(problem.question)[0]:
      assert name not in env  # each variable defined once, before use
      env[name] = eval(expr, {}, dict(env))
    assert problem.answer == env[_definitions(problem.question)[1]]
    for step in problem.steps:  # "b = 7 + 4 = 11": the arithmetic and the variable's value
      name, expr, result = step.split(" = ")
      assert eval(expr) == int(result) == env[name]
    assert all(0 <= v <= arithmetic.VALUE_CAP for v in env.values())


def test_checker_accepts_gold_and_rejects_perturbed_answers():
  for problem in PROBLEMS:
    gold = format_completion(problem)
    assert is_correct(problem, gold)
    for wrong in (problem.answer + 1, problem.answer - 1, problem.answer * 10 + 1):
      assert not is_correct(problem, gold.replace(f"answer: {problem.answer}", f"answer: {wrong}"))
    assert not is_correct(problem, "".join(s + "\n" for s in problem.steps))  # no answer line
  assert extract_answer("x = 1\nanswer: 1,234\nanswer: 5\n") == 1234  # the first answer counts
  assert extract_answer("so 3 + 4 = 7\n#### -12") == -12
  assert extract_answer("answer: ?") is None


def test_text_format_is_one_step_per_line_then_the_answer_line():
  problem = arithmetic.generate(3, 4)
  assert format_prompt(problem) == f"question: {problem.question}\n"
  lines = format_completion(problem).split("\n")
  assert lines[:-2] == list(problem.steps) and lines[-2:] == [f"answer: {problem.answer}", ""]


def test_difficulty_sets_steps_operand_size_and_distractors():
  largest = []
  for d in DIFFICULTIES:
    problems = [p for p in PROBLEMS if p.difficulty == d]
    spec = arithmetic.difficulty_spec(d)
    operands = []
    for p in problems:
      assert len(p.steps) == spec.num_steps == d
      definitions, target = _definitions(p.question)
      exprs = dict(definitions)
      needed, frontier = set(), [target]  # variables the asked one depends on
      while frontier:
        name = frontier.pop()
        needed.add(name)
        frontier += [v for v in re.findall(r"[a-z]", exprs[name]) if v not in needed]
      assert len(definitions) - len(needed) == spec.num_distractors == (d - 1) // 2
      operands += [int(s.split(" ")[4]) for s in p.steps]  # "b = 7 + 4 = 11" -> 4
    assert max(operands) <= spec.max_operand
    largest.append(max(operands))
  assert largest == sorted(largest) and largest[-1] > 5 * largest[0]
  with pytest.raises(ValueError, match="difficulty"):
    arithmetic.generate(0, arithmetic.MAX_DIFFICULTY + 1)


def test_generation_is_deterministic_by_seed():
  assert arithmetic.generate(5, 6) == arithmetic.generate(5, 6)
  assert len({arithmetic.generate(s, 6).question for s in range(20)}) == 20
  a, b = arithmetic.ArithmeticSource(50, seed=1), arithmetic.ArithmeticSource(50, seed=1)
  assert [a[i] for i in range(50)] == [b[i] for i in range(50)]
  assert a[np.int64(7)] == a[7] != arithmetic.ArithmeticSource(50, seed=2)[7]


def test_arithmetic_source_serves_through_grain():
  source = arithmetic.ArithmeticSource(20, seed=0, difficulties=(2, 5))
  answers = list(grain.MapDataset.source(source).map(lambda p: p.answer))
  assert answers == [source[i].answer for i in range(20)]
  assert [source[i].difficulty for i in range(4)] == [2, 5, 2, 5]
  assert source.check(source[3], format_completion(source[3]))
  with pytest.raises(IndexError):
    source[20]


def test_gsm_adapter_reads_jsonl(tmp_path):
  records = [
      {"question": "Tom has 3 apples and buys 4 more.\nHow many?",
       "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
      {"question": "A farm sells 1,200 eggs twice.",
       "answer": "First 1200.\nThen 1200 * 2 = <<1200*2=2400>>2400.\n#### 2,400"},
  ]
  path = tmp_path / "gsm.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  source = gsm.GsmSource(path)
  assert len(source) == 2
  assert source[0] == Problem("Tom has 3 apples and buys 4 more. How many?",
                              ("He has 3 + 4 = 7 apples.",), 7, 1)
  assert source[1].answer == 2400 and source[1].difficulty == 2
  assert source.check(source[1], "1200 * 2 = 2400\nanswer: 2400\n")
  assert not source.check(source[1], "answer: 2401\n")
  with pytest.raises(ValueError, match="####"):
    gsm.parse_record({"question": "q", "answer": "no marker 7"})


def test_follows_gold_steps_accepts_gold_prefixes_and_rejects_any_changed_line():
  problem = arithmetic.generate(5, 4)
  lines = [step + "\n" for step in problem.steps]
  for s in range(len(lines) + 1):
    assert follows_gold_steps(problem, "".join(lines[:s]))
  assert not follows_gold_steps(problem, "".join(lines) + "x = 1 + 1 = 2\n")  # past the gold
  for s in range(len(lines)):
    name, expr, result = problem.steps[s].split(" = ")
    for wrong in (f"{name} = {expr} = {int(result) + 1}",  # arithmetic slip
                  f"{name} = {expr.replace(' ', '  ', 1)} = {result}",  # other text
                  f"q{name} = {expr} = {result}"):  # wrong variable
      assert not follows_gold_steps(problem, "".join(lines[:s]) + wrong + "\n")
  with pytest.raises(ValueError, match="whole lines"):
    follows_gold_steps(problem, lines[0] + "b = 3")


@pytest.mark.parametrize("difficulty", range(1, 9))
def test_max_text_length_bounds_every_problem_and_is_tight(difficulty):
  lengths = [len(format_prompt(p) + format_completion(p))
             for p in (arithmetic.generate((7, i), difficulty) for i in range(2000))]
  bound = arithmetic.max_text_length(difficulty)
  assert max(lengths) <= bound <= 1.1 * max(lengths)
