"""Unlabelled prompts: what the label-free loop is given, with no answer and no solution.

The loop's code path takes `UnlabelledPrompt`s only (`require_unlabelled`), so nothing in it
can read a gold answer or a gold step: the type has a question and nothing else.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class UnlabelledPrompt:
  """A question as the policy reads it, without its answer, steps or difficulty."""
  question: str


def unlabelled(problems) -> tuple[UnlabelledPrompt, ...]:
  """The questions of `problems` (anything with a `.question`), every other field dropped."""
  return tuple(UnlabelledPrompt(str(p.question)) for p in problems)


def require_unlabelled(prompts) -> tuple[UnlabelledPrompt, ...]:
  """`prompts` as a tuple, after checking that each is an UnlabelledPrompt (never a Problem)."""
  prompts = tuple(prompts)
  if not prompts:
    raise ValueError("prompts must hold at least one UnlabelledPrompt")
  for i, p in enumerate(prompts):
    if type(p) is not UnlabelledPrompt:
      raise TypeError(f"prompts[{i}] must be an UnlabelledPrompt (label_free.prompts.unlabelled "
                      f"strips answers and steps), got {type(p).__name__}")
  return prompts

