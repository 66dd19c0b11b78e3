"""The reasoning-gym adapter against a hand-written dataset following reasoning-gym's protocol."""

import pickle
import sys

import pytest

from adaptive_jax.tasks.problem import (
  Problem,
  extract_answer_text,
  format_completion,
  format_prompt,
  is_correct,
)
from adaptive_jax.tasks.reasoning_gym_source import ReasoningGymProblem, ReasoningGymSource

ENTRIES = [
    {"question": "Calculate 5 - 3 - 6.", "answer": "-4",
     "metadata": {"num_terms": 3, "difficulty": {"num_terms": (2, 6)}}},
    {"question": "Sort these words:\n  pear, apple,\n fig", "answer": "apple, fig, pear",
     "metadata": {"difficulty": 7, "num_terms": 2}},
    {"question": "What is 2 + 2?", "answer": " 4 "},
]


class FakeDataset:
  """reasoning-gym's dataset protocol: len, entries by index, score_answer(answer, entry)."""

  def __init__(self, entries):
    self.entries = entries
    self.scored = []  # (answer, entry) for every score_answer call

  def __len__(self):
    return len(self.entries)

  def __getitem__(self, index):
    return self.entries[index]

  def score_answer(self, answer, entry):
    self.scored.append((answer, entry))
    return float(answer is not None and answer.strip() == entry["answer"].strip())


def test_problems_come_out_with_flat_question_no_steps_answer_and_difficulty():
  source = ReasoningGymSource(FakeDataset(ENTRIES))
  assert len(source) == 3
  problems = [source[i] for i in range(3)]
  assert [(p.question, p.steps, p.answer, p.difficulty) for p in problems] == [
      ("Calculate 5 - 3 - 6.", (), "-4", 3),  # metadata difficulty is a dict: num_terms
      ("Sort these words: pear, apple, fig", (), "apple, fig, pear", 7),  # int difficulty
      ("What is 2 + 2?", (), "4", 0)]  # no metadata
  assert isinstance(source[0], Problem) and source[1].entry == ENTRIES[1]
  assert format_prompt(source[1]) == "question: Sort these words: pear, apple, fig\n"
  assert format_completion(source[1]) == "answer: apple, fig, pear\n"
  assert pickle.loads(pickle.dumps(source[0])) == source[0]  # grain workers pickle problems
  custom = ReasoningGymSource(FakeDataset(ENTRIES), difficulty_fn=lambda e: len(e["answer"]))
  assert [custom[i].difficulty for i in range(3)] == [2, 16, 3]


def test_check_accepts_the_gold_answer_and_rejects_perturbed_ones():
  dataset = FakeDataset(ENTRIES)
  source = ReasoningGymSource(dataset)
  for i, entry in enumerate(ENTRIES):
    problem = source[i]
    assert source.check(problem, format_completion(problem))
    assert dataset.scored[-1] == (problem.answer, entry)  # the original entry reaches the scorer
    for wrong in (problem.answer + "0", "-" + problem.answer, problem.answer[:-1]):
      assert not source.check(problem, f"answer: {wrong}\n")
    assert not source.check(problem, problem.answer + "\n")  # no answer line
  with pytest.raises(TypeError, match="ReasoningGymProblem"):
    source.check(Problem("q", (), "-4", 0), "answer: -4\n")


def test_scores_below_one_are_wrong():
  class PartialCredit(FakeDataset):
    def score_answer(self, answer, entry):
      return 0.99 if answer == "close" else super().score_answer(answer, entry)

  source = ReasoningGymSource(PartialCredit(ENTRIES))
  assert not source.check(source[0], "answer: close\n")
  assert source.check(source[0], "answer: -4\n")


def test_answer_marker_first_wins_and_whitespace_is_stripped():
  assert extract_answer_text("work\nanswer:   apple, fig, pear \t\nanswer: x\n") == \
      "apple, fig, pear"
  assert extract_answer_text("so the answer: -4 and more\nanswer: 5") == "-4 and more"
  assert extract_answer_text("no marker here") is None
  assert extract_answer_text("answer:   \nanswer: 5") is None  # the first marker is empty
  source = ReasoningGymSource(FakeDataset(ENTRIES))
  assert source.check(source[2], "answer:4")  # gold " 4 " with its spaces stripped
  assert not source.check(source[0], "answer: -5\nanswer: -4\n")
  # Text answers also work with the generic checker; integer answers keep numeric parsing.
  assert is_correct(source[1], "answer: apple, fig, pear\n")
  assert not is_correct(source[1], "answer: apple,fig,pear\n")
  assert is_correct(Problem("q", (), 1234, 1), "answer: 1,234\n")


@pytest.mark.parametrize("entry, field", [
    ({"answer": "1"}, "'question'"),
    ({"question": "q"}, "'answer'"),
    ({"question": "q", "answer": None}, "'answer'"),  # tasks without a single gold answer
    ({"question": "q", "answer": "1 2\n3 4"}, "'answer'"),  # grid answers span lines
    ({"question": "q", "answer": "1", "metadata": [1]}, "'metadata'"),
    ({"question": "q", "answer": "  "}, "'answer' must be non-empty"),
    ({"question": "", "answer": "1"}, "'question' must be non-empty"),
    ({"question": "q", "answer": "1", "metadata": {"difficulty": -2}}, "difficulty of entry 0"),
    ("question: q", "dict"),
])
def test_bad_entries_raise_naming_the_field(entry, field):
  with pytest.raises(ValueError, match=field):
    ReasoningGymSource(FakeDataset([entry]))[0]


def test_bad_indices():
  source = ReasoningGymSource(FakeDataset(ENTRIES))
  with pytest.raises(IndexError, match="index -1 out of range"):
    source[-1]
  with pytest.raises(IndexError):
    source[3]
  with pytest.raises(TypeError):
    source[1.5]


def test_from_name_without_the_library_raises_an_install_hint(monkeypatch):
  monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # makes `import reasoning_gym` fail
  with pytest.raises(ImportError, match=r'pip install "reasoning-gym>=0\.1\.25"'):
    ReasoningGymSource.from_name("basic_arithmetic", size=4, seed=0)


def test_from_name_builds_the_named_dataset(monkeypatch):
  calls = []

  class FakeModule:
    @staticmethod
    def create_dataset(name, **kwargs):
      calls.append((name, kwargs))
      return FakeDataset(ENTRIES)

  monkeypatch.setitem(sys.modules, "reasoning_gym", FakeModule)
  source = ReasoningGymSource.from_name("chain_sum", size=3, seed=5, min_terms=2)
  assert calls == [("chain_sum", {"size": 3, "seed": 5, "min_terms": 2})]
  assert isinstance(source[0], ReasoningGymProblem) and source[0].answer == "-4"
