"""Monte-Carlo PRM labels: responses, their step prefixes, and rollouts from each prefix.

For each question the policy writes `num_responses` responses; each response is cut at its
step boundaries into prefixes (step 0 = the question alone, step s = the question and the
first s solution lines; the complete response is not a prefix). From every prefix the policy
draws `num_rollouts` continuations; the prefix's target is the fraction that end with the
correct answer (paper: 8 responses, 8 rollouts, steps 0..20, temperature 0.7). Records are
JSON in array_record shards, one shard per block of questions, so an interrupted run resumes
at the first missing shard; `settings.json` beside the shards records what made them, and a
resume with other settings stops instead of mixing records of two configurations.
"""

import json
import os
from collections.abc import Callable, Mapping, Sequence

import grain
import jax
from array_record.python import array_record_module

from adaptive_jax import atomic_file
from adaptive_jax.tasks.problem import STEP_END, Problem, format_prompt, is_correct

# complete(prompts, key) -> one sampled continuation per prompt text (see policy.evaluate).
CompleteFn = Callable[[list[str], object], list[str]]
# check(problem, completion) -> whether the completion's answer is right (a TaskSource's check).
CheckFn = Callable[[Problem, str], bool]


def step_prefixes(completion: str, max_steps: int) -> list[str]:
  """Solution prefixes ending at step boundaries: '', first line, first two lines, ...

  Stops before the last complete line (a finished response is not a prefix) and at max_steps.
  """
  complete_lines = completion.split(STEP_END)[:-1]  # text after the last newline is unfinished
  last = max(min(len(complete_lines) - 1, max_steps), 0)
  return ["".join(line + STEP_END for line in complete_lines[:s]) for s in range(last + 1)]


def question_records(problems: Sequence[Problem], first_id: int, complete: CompleteFn, key, *,
                     num_responses: int, num_rollouts: int, max_steps: int,
                     check: CheckFn = is_correct) -> list[dict]:
  """All prefix records of some questions, in 2 batched calls of `complete`.

  The first call writes every question's responses, the second every prefix's rollouts;
  `check` (the task source's) scores them.
  """
  response_key, rollout_key = jax.random.split(key)
  prompts = [format_prompt(p) for p in problems]
  responses = complete([p for p in prompts for _ in range(num_responses)], response_key)
  prefixes = []  # (question index, response index, step, prefix text)
  for q in range(len(problems)):
    for r in range(num_responses):
      response = responses[q * num_responses + r]
      prefixes += [(q, r, s, p) for s, p in enumerate(step_prefixes(response, max_steps))]
  rollouts = complete([prompts[q] + p for q, _, _, p in prefixes for _ in range(num_rollouts)],
                      rollout_key)
  records = []
  for i, (q, r, s, prefix) in enumerate(prefixes):
    problem = problems[q]
    outcomes = rollouts[i * num_rollouts:(i + 1) * num_rollouts]
    correct = sum(check(problem, prefix + o) for o in outcomes)
    records.append({
        "question_id": first_id + q, "difficulty": problem.difficulty, "response_id": r,
        "step": s, "text": prompts[q] + prefix, "num_rollouts": num_rollouts,
        "rollouts_correct": correct, "target": correct / num_rollouts,
        "response_correct": check(problem, responses[q * num_responses + r]),
        "rollouts": outcomes})
  return records


SETTINGS_FILE = "settings.json"


def _claim(out_dir: str, settings: dict):
  """Writes `settings` to out_dir, or checks that the records already there were made with them."""
  path = os.path.join(out_dir, SETTINGS_FILE)
  settings = json.loads(json.dumps(settings))  # tuples -> lists, as they read back
  if not os.path.exists(path):
    if any(name.endswith(".array_record") for name in os.listdir(out_dir)):
      raise ValueError(f"{out_dir} holds MC shards but no {SETTINGS_FILE}: their settings are "
                       f"unknown; delete {out_dir} or use a new workdir")
    atomic_file.write_json(path, settings, sort_keys=True)
    return
  with open(path) as f:
    old = json.load(f)
  changed = sorted(k for k in old.keys() | settings.keys() if old.get(k) != settings.get(k))
  if changed:
    diff = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
    raise ValueError(f"{out_dir} holds MC records made with other settings ({diff}); delete "
                     f"{out_dir} or use a new workdir")


def generate_shards(problems: Sequence[Problem], complete: CompleteFn, key, out_dir: str, *,
                    questions_per_shard: int, num_responses: int, num_rollouts: int,
                    max_steps: int, check: CheckFn = is_correct,
                    settings: Mapping | None = None) -> list[str]:
  """Writes `out_dir/mc-<shard>.array_record` shards, skipping those already complete.

  `settings`: what else decides the records (policy, temperature, seeds...); stored with the
  counts above in `out_dir/settings.json`, and a resume with different values raises.
  """
  for name, value in (("questions_per_shard", questions_per_shard),
                      ("num_responses", num_responses), ("num_rollouts", num_rollouts)):
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  os.makedirs(out_dir, exist_ok=True)
  _claim(out_dir, {**(settings or {}), "questions_per_shard": questions_per_shard,
                   "num_responses": num_responses, "num_rollouts": num_rollouts,
                   "max_steps": max_steps})
  paths = []
  for shard, start in enumerate(range(0, len(problems), questions_per_shard)):
    path = os.path.join(out_dir, f"mc-{shard:05d}.array_record")
    paths.append(path)
    if os.path.exists(path):  # written whole (renamed into place): resume past it
      continue
    records = question_records(problems[start:start + questions_per_shard], start, complete,
                               jax.random.fold_in(key, shard), num_responses=num_responses,
                               num_rollouts=num_rollouts, max_steps=max_steps, check=check)
    with atomic_file.replacing(path) as tmp:
      writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
      for record in records:
        writer.write(json.dumps(record).encode("utf-8"))
      writer.close()
  return paths


def read_records(paths: Sequence[str]) -> list[dict]:
  """All records of the shards, in order, through grain's array_record source."""
  source = grain.sources.ArrayRecordDataSource(list(paths))
  return [json.loads(source[i]) for i in range(len(source))]
