"""Monte-Carlo PRM records: prefixes at step boundaries, targets = stored rollouts' success rate."""

import jax
import numpy as np
import pytest

from adaptive_jax.prm.mc_data import generate_shards, read_records, step_prefixes
from adaptive_jax.tasks import arithmetic
from adaptive_jax.tasks.problem import format_completion, format_prompt, is_correct


def test_step_prefixes_cut_at_newlines_and_exclude_the_finished_response():
  completion = "b = 7 + 4 = 11\nd = 11 * 6 = 66\nanswer: 66\n"
  assert step_prefixes(completion, max_steps=20) == [
      "", "b = 7 + 4 = 11\n", "b = 7 + 4 = 11\nd = 11 * 6 = 66\n"]
  assert step_prefixes(completion, max_steps=1) == ["", "b = 7 + 4 = 11\n"]
  assert step_prefixes("no newline at all", max_steps=5) == [""]
  assert step_prefixes("", max_steps=5) == [""]


def _coin_policy(problems_by_prompt, p_gold, seed=0):
  """A fake policy: from any prefix, continues with the gold solution w.p. p_gold, else junk."""
  rng = np.random.default_rng(seed)

  def complete(prompts, key):
    del key
    out = []
    for text in prompts:
      prompt = next(p for p in problems_by_prompt if text.startswith(p))
      problem = problems_by_prompt[prompt]
      done = text[len(prompt):]
      gold = format_completion(problem)
      if gold.startswith(done) and rng.random() < p_gold:
        out.append(gold[len(done):])
      else:
        out.append("z = 1 + 1 = 2\nanswer: -1\n")
    return out
  return complete


def test_targets_equal_the_success_rate_of_the_stored_rollouts(tmp_path):
  problems = [arithmetic.generate(i, d) for i, d in enumerate((1, 3, 5))]
  complete = _coin_policy({format_prompt(p): p for p in problems}, p_gold=0.6)
  paths = generate_shards(problems, complete, jax.random.key(0), str(tmp_path / "mc"),
                          questions_per_shard=2, num_responses=3, num_rollouts=5, max_steps=20)
  assert len(paths) == 2
  records = read_records(paths)
  assert {r["question_id"] for r in records} == {0, 1, 2}
  for r in records:
    problem = problems[r["question_id"]]
    prefix = r["text"][len(r["text"].split("\n", 1)[0]) + 1:]
    empirical = np.mean([is_correct(problem, prefix + o) for o in r["rollouts"]])
    assert r["target"] == pytest.approx(empirical)
    assert r["rollouts_correct"] == round(empirical * r["num_rollouts"])
    assert r["text"].endswith("\n") and r["text"].count("\n") == r["step"] + 1
  # Step-0 prefixes exist for every response; gold responses give deeper prefixes.
  assert sum(r["step"] == 0 for r in records) == 3 * 3
  assert max(r["step"] for r in records) >= 2


def test_generation_resumes_past_finished_shards(tmp_path):
  problems = [arithmetic.generate(i, 2) for i in range(4)]
  calls = []
  inner = _coin_policy({format_prompt(p): p for p in problems}, p_gold=0.5)
  complete = lambda prompts, key: calls.append(len(prompts)) or inner(prompts, key)
  kwargs = dict(questions_per_shard=2, num_responses=2, num_rollouts=2, max_steps=4)
  first = generate_shards(problems[:2], complete, jax.random.key(0), str(tmp_path), **kwargs)
  n_calls = len(calls)
  paths = generate_shards(problems, complete, jax.random.key(0), str(tmp_path), **kwargs)
  assert paths[0] == first[0]
  assert len(calls) == n_calls + 2  # only the second shard ran: 2 batched calls
  assert len({r["question_id"] for r in read_records(paths)}) == 4


def test_bad_counts_raise_naming_the_field(tmp_path):
  with pytest.raises(ValueError, match="num_rollouts must be >= 1"):
    generate_shards([arithmetic.generate(0, 1)], lambda p, k: p, jax.random.key(0),
                    str(tmp_path), questions_per_shard=1, num_responses=1, num_rollouts=0,
                    max_steps=3)


def test_rollouts_are_scored_by_the_given_checker(tmp_path):
  # A checker that reads "answer: -1" as right flips every junk rollout to correct.
  problems = [arithmetic.generate(i, 2) for i in range(2)]
  complete = _coin_policy({format_prompt(p): p for p in problems}, p_gold=0.0)
  kwargs = dict(questions_per_shard=2, num_responses=2, num_rollouts=3, max_steps=4)
  default = read_records(generate_shards(problems, complete, jax.random.key(0),
                                         str(tmp_path / "a"), **kwargs))
  flipped = read_records(generate_shards(problems, complete, jax.random.key(0),
                                         str(tmp_path / "b"), **kwargs,
                                         check=lambda p, text: not is_correct(p, text)))
  assert [r["target"] for r in default] == [0.0] * len(default)
  assert [r["target"] for r in flipped] == [1.0] * len(flipped)
  assert all(r["response_correct"] for r in flipped)


def test_resume_with_other_settings_raises_naming_them(tmp_path):
  problems = [arithmetic.generate(i, 1) for i in range(2)]
  complete = _coin_policy({format_prompt(p): p for p in problems}, p_gold=0.5)
  kwargs = dict(questions_per_shard=1, num_responses=1, num_rollouts=2, max_steps=2)
  generate_shards(problems[:1], complete, jax.random.key(0), str(tmp_path), **kwargs,
                  settings={"temperature": 0.7})
  # Same settings: resumes (one more shard).
  assert len(generate_shards(problems, complete, jax.random.key(0), str(tmp_path), **kwargs,
                             settings={"temperature": 0.7})) == 2
  with pytest.raises(ValueError, match=r"num_rollouts: 2 there, 3 now"):
    generate_shards(problems, complete, jax.random.key(0), str(tmp_path),
                    **{**kwargs, "num_rollouts": 3}, settings={"temperature": 0.7})
  with pytest.raises(ValueError, match=r"temperature: 0.7 there, 1.0 now"):
    generate_shards(problems, complete, jax.random.key(0), str(tmp_path), **kwargs,
                    settings={"temperature": 1.0})
  (tmp_path / "settings.json").unlink()
  with pytest.raises(ValueError, match=r"no settings.json"):
    generate_shards(problems, complete, jax.random.key(0), str(tmp_path), **kwargs)
