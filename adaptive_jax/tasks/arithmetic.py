"""The embedded task: chained integer arithmetic over named variables, with a difficulty knob.

Difficulty d in 1..8 sets the number of solution steps (d), the operand size (up to 10d - 1)
and the distractors (unused definitions, (d - 1) // 2). `generate(0, 3)`:

  question: j = 9, v = 17, x = j + v, k = x + 3, c = v + 26, e = k + 25. e = ?
  x = 9 + 17 = 26
  k = 26 + 3 = 29
  e = 29 + 25 = 54
  answer: 54

Only the chain from the first variable to the asked one becomes steps (here c is a distractor);
an operand is either a literal or a named constant whose value the step writes out. Every
value stays in [0, VALUE_CAP], so no step needs more than three-digit arithmetic.
"""

import dataclasses
import operator
import string
from collections.abc import Sequence

import numpy as np

from adaptive_jax.tasks.problem import Problem, is_correct
from adaptive_jax.typed_config import check_integer

MIN_DIFFICULTY, MAX_DIFFICULTY = 1, 8
VALUE_CAP = 999
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@dataclasses.dataclass(frozen=True)
class DifficultySpec:
  num_steps: int
  max_operand: int
  num_distractors: int


def check_difficulties(field: str, values) -> tuple[int, ...]:
  """`values` as a tuple, or ValueError naming `field` unless it holds at least one difficulty
  and each is an integer in [MIN_DIFFICULTY, MAX_DIFFICULTY]."""
  values = tuple(values)
  if not values:
    raise ValueError(f"{field} needs at least one difficulty")
  for d in values:
    check_integer(f"{field} entry", d, minimum=MIN_DIFFICULTY, maximum=MAX_DIFFICULTY)
  return values


def difficulty_spec(difficulty: int) -> DifficultySpec:
  if not MIN_DIFFICULTY <= difficulty <= MAX_DIFFICULTY:
    raise ValueError(f"difficulty must be in [{MIN_DIFFICULTY}, {MAX_DIFFICULTY}], "
                     f"got {difficulty}")
  return DifficultySpec(num_steps=difficulty, max_operand=10 * difficulty - 1,
                        num_distractors=(difficulty - 1) // 2)


def max_text_length(difficulty: int) -> int:
  """An upper bound on len(format_prompt + format_completion) of any problem of `difficulty`.

  Worst case of every part of the generator: one-letter names, operands of up to
  len(str(10d - 1)) digits, chain values of up to 3; the start value, d step definitions
  ("b = a + 12"), d named constants ("c = 12"), (d - 1) // 2 derived distractors, each joined
  by ", "; d step lines ("b = 999 + 12 = 999\n") and the answer line ("answer: 999\n").
  Difficulty 8: 220 + 152 + 12 = 384 (the longest of 3,000 generated problems has 367).
  """
  spec = difficulty_spec(difficulty)
  digits = len(str(spec.max_operand))
  value_digits = len(str(VALUE_CAP))
  num_defs = 1 + 2 * spec.num_steps + spec.num_distractors
  literal_def, derived_def = 4 + digits, 8 + digits  # "c = 12", "b = a + 12"
  question = (len("question: ") + literal_def + spec.num_steps * (derived_def + literal_def)
              + spec.num_distractors * derived_def + 2 * (num_defs - 1) + len(". e = ?\n"))
  step_line = len("b = ") + value_digits + len(" + ") + digits + len(" = ") + value_digits + 1
  return question + spec.num_steps * step_line + len("answer: ") + value_digits + 1


def _operation(rng, value: int, max_operand: int) -> tuple[str, int]:
  """An op and operand keeping `value op operand` in [0, VALUE_CAP]."""
  ops = [op for op, ok in (("+", value < VALUE_CAP), ("-", value >= 1),
                           ("*", 2 * value <= VALUE_CAP and max_operand >= 2)) if ok]
  op = ops[rng.integers(len(ops))]
  if op == "+":
    return op, int(rng.integers(1, min(max_operand, VALUE_CAP - value) + 1))
  if op == "-":
    return op, int(rng.integers(1, min(max_operand, value) + 1))
  return op, int(rng.integers(2, min(max_operand, VALUE_CAP // max(value, 1)) + 1))


def generate(seed: int | Sequence[int], difficulty: int) -> Problem:
  """The problem for (seed, difficulty); the same arguments always give the same problem."""
  spec = difficulty_spec(difficulty)
  seed = (seed,) if isinstance(seed, (int, np.integer)) else tuple(seed)
  rng = np.random.default_rng([*seed, difficulty])
  names = iter(rng.permutation(list(string.ascii_lowercase)))
  defs, values, steps = [], {}, []  # defs: (name, expression text) in question order

  def define(expr: str, value: int) -> str:
    name = str(next(names))
    defs.append((name, expr))
    values[name] = value
    return name

  current = define(str(v := int(rng.integers(1, spec.max_operand + 1))), v)
  for _ in range(spec.num_steps):
    value = values[current]
    op, operand = _operation(rng, value, spec.max_operand)
    # Half the operands are named constants: the step must look their value up.
    operand_text = define(str(operand), operand) if rng.random() < 0.5 else str(operand)
    result = _OPS[op](value, operand)
    new = define(f"{current} {op} {operand_text}", result)
    steps.append(f"{new} = {value} {op} {operand} = {result}")
    current = new
  for _ in range(spec.num_distractors):
    position = int(rng.integers(len(defs) + 1))
    name = str(next(names))
    if position == 0 or rng.random() < 0.5:
      values[name] = int(rng.integers(1, spec.max_operand + 1))
      expr = str(values[name])
    else:  # derived from an earlier variable, so it looks like part of the chain
      source = defs[int(rng.integers(position))][0]
      op, operand = _operation(rng, values[source], spec.max_operand)
      values[name] = _OPS[op](values[source], operand)
      expr = f"{source} {op} {operand}"
    defs.insert(position, (name, expr))
  question = ", ".join(f"{n} = {e}" for n, e in defs) + f". {current} = ?"
  return Problem(question=question, steps=tuple(steps), answer=values[current],
                 difficulty=difficulty)


@dataclasses.dataclass(frozen=True)
class ArithmeticSource:
  """A grain RandomAccessDataSource: index i -> generate((seed, i), difficulties[i % len])."""
  size: int
  seed: int = 0
  difficulties: tuple[int, ...] = tuple(range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1))

  def __post_init__(self):
    for d in self.difficulties:
      difficulty_spec(d)  # validates
    if self.size < 0 or not self.difficulties:
      raise ValueError(f"need size >= 0 and some difficulties, got {self.size}, "
                       f"{self.difficulties}")

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index) -> Problem:
    index = operator.index(index)
    if not 0 <= index < self.size:
      raise IndexError(f"index {index} out of range for {self.size} problems")
    return generate((self.seed, index), self.difficulties[index % len(self.difficulties)])

  def check(self, problem: Problem, completion: str) -> bool:
    return is_correct(problem, completion)


def problems(size: int, seed: int, difficulties) -> list[Problem]:
  """The `size` problems of an ArithmeticSource, difficulties cycling over `difficulties`."""
  source = ArithmeticSource(size=size, seed=seed, difficulties=tuple(difficulties))
  return [source[i] for i in range(size)]
