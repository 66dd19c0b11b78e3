"""SmolLM2-135M-Instruct few-shot on the arithmetic task: accuracy by difficulty.

With `select.problems_per_difficulty` > 0 the prompt variant (format x number of shots) is
chosen on validation problems (their own seed), else `prompt` is used as given; the test
problems are then read once, with that variant. Shots are gold solutions of other problems
(`prompt.shot_seed`) of the question's own difficulty, the same k for every question of that
difficulty. Accuracy per difficulty comes with a Wilson score interval.
"""

import dataclasses
import os
import time

import jax
import ml_collections
import numpy as np
import scipy.stats
from absl import logging

from adaptive_jax import atomic_file
from adaptive_jax.models import smollm2
from adaptive_jax.policy import few_shot
from adaptive_jax.sampler.decode import SamplingPolicy
from adaptive_jax.tasks import arithmetic
from adaptive_jax.tasks.problem import extract_answer, is_correct
from adaptive_jax.typed_config import (
  check_choice,
  check_int,
  check_integer,
  check_open_interval,
  from_mapping,
)


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  """See configs/policy_eval_smollm2.py for the meaning of each field."""
  format: str = "plain"
  shots: int = 4
  shot_seed: int = 5

  def __post_init__(self):
    check_choice("prompt", "format", self.format, few_shot.FORMATS)
    check_int("prompt", "shots", self.shots, minimum=0)
    check_int("prompt", "shot_seed", self.shot_seed, minimum=0)


@dataclasses.dataclass(frozen=True)
class SelectConfig:
  formats: tuple[str, ...] = few_shot.FORMATS
  shots: tuple[int, ...] = (4,)
  problems_per_difficulty: int = 0
  seed: int = 4

  def __post_init__(self):
    object.__setattr__(self, "formats", tuple(self.formats))
    object.__setattr__(self, "shots", tuple(self.shots))
    for f in self.formats:
      check_choice("select", "formats entry", f, few_shot.FORMATS)
    for k in self.shots:
      check_integer("select.shots entry", k, minimum=0)
    check_int("select", "problems_per_difficulty", self.problems_per_difficulty, minimum=0)
    check_int("select", "seed", self.seed, minimum=0)
    if self.problems_per_difficulty and not (self.formats and self.shots):
      raise ValueError("select.formats and select.shots need an entry each when "
                       "select.problems_per_difficulty > 0")


@dataclasses.dataclass(frozen=True)
class FewShotEvalConfig:
  """The few-shot policy's accuracy: questions per difficulty, batching, sampling, interval."""
  difficulties: tuple[int, ...] = tuple(range(arithmetic.MIN_DIFFICULTY,
                                              arithmetic.MAX_DIFFICULTY + 1))
  problems_per_difficulty: int = 16
  seed: int = 1
  batch_size: int = 32
  extra_new_tokens: int = 24
  temperature: float = 0.0
  confidence: float = 0.9

  def __post_init__(self):
    object.__setattr__(self, "difficulties",
                       arithmetic.check_difficulties("eval.difficulties", self.difficulties))
    for name in ("problems_per_difficulty", "batch_size", "extra_new_tokens"):
      check_int("eval", name, getattr(self, name))
    check_int("eval", "seed", self.seed, minimum=0)
    if self.temperature != 0.0:
      check_open_interval("eval", "temperature", self.temperature, 0.0)
    check_open_interval("eval", "confidence", self.confidence, 0.0, 1.0)


def typed_configs(config: ml_collections.ConfigDict):
  return (from_mapping(PromptConfig, config.prompt, "prompt"),
          from_mapping(SelectConfig, config.select, "select"),
          from_mapping(FewShotEvalConfig, config.eval, "eval"))


def wilson_interval(correct: int, total: int, confidence: float) -> tuple[float, float]:
  """The Wilson score interval of a binomial proportion (sensible at 0/n and n/n)."""
  z = scipy.stats.norm.ppf(0.5 + confidence / 2)
  p = correct / total
  center = (p + z**2 / (2 * total)) / (1 + z**2 / total)
  half = z / (1 + z**2 / total) * np.sqrt(p * (1 - p) / total + z**2 / (4 * total**2))
  return max(0.0, float(center - half)), min(1.0, float(center + half))


def problems_by_difficulty(seed: int, per_difficulty: int, difficulties) -> dict:
  """{difficulty: problems}: index i of ArithmeticSource(seed) has difficulty
  difficulties[i % len] (at seed 1, 32 per difficulty: configs/policy_small.py's eval set)."""
  source = arithmetic.ArithmeticSource(per_difficulty * len(difficulties), seed, difficulties)
  return {d: [source[i] for i in range(j, len(source), len(difficulties))]
          for j, d in enumerate(difficulties)}


def prompt_for(prompt_format: str, shots: int, shot_seed: int,
               difficulty: int) -> few_shot.FewShotPrompt:
  return few_shot.FewShotPrompt(prompt_format, tuple(
      arithmetic.generate((shot_seed, j), difficulty) for j in range(shots)))


def evaluate(model, prompt_format: str, shots: int, shot_seed: int, problems: dict,
             cfg: FewShotEvalConfig, key) -> dict:
  """Per difficulty: correct, total, answered (an answer line was read), one example."""
  policy = SamplingPolicy(temperature=cfg.temperature)
  rows = {}
  for d, batch in problems.items():
    tick = time.perf_counter()
    prompt = prompt_for(prompt_format, shots, shot_seed, d)
    correct = answered = 0
    example = None
    for start in range(0, len(batch), cfg.batch_size):
      chunk = batch[start:start + cfg.batch_size]
      # A correct solution is as long as the gold one; the margin lets a wrong one run on.
      max_new = max(few_shot.gold_tokens(model, p) for p in chunk) + cfg.extra_new_tokens
      texts = few_shot.solve(model, prompt, chunk, key=jax.random.fold_in(key, d * 10_000 + start),
                             max_new_tokens=max_new, policy=policy)
      for problem, (text,) in zip(chunk, texts):
        ok = is_correct(problem, text)  # the task's checker (ArithmeticSource.check)
        correct += ok
        answered += extract_answer(text) is not None
        example = example or {"question": problem.question, "gold": problem.answer,
                              "completion": text, "correct": bool(ok)}
    seconds = time.perf_counter() - tick
    rows[d] = {"correct": correct, "total": len(batch), "accuracy": correct / len(batch),
               "answered": answered / len(batch), "seconds": seconds, "example": example}
    logging.info("%s k=%d difficulty %d: %d/%d correct, %.0f s", prompt_format, shots, d,
                 correct, len(batch), seconds)
  return rows


def run_study(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Selects the prompt variant on validation, evaluates it on test; writes results.json."""
  prompt_cfg, select_cfg, eval_cfg = typed_configs(config)
  start = time.perf_counter()
  model = smollm2.load()
  key = jax.random.key(0)
  results = {"model": smollm2.FILENAME,
             "config": {"prompt": dataclasses.asdict(prompt_cfg),
                        "select": dataclasses.asdict(select_cfg),
                        "eval": dataclasses.asdict(eval_cfg)}}
  chosen = (prompt_cfg.format, prompt_cfg.shots)
  if select_cfg.problems_per_difficulty:
    validation = problems_by_difficulty(select_cfg.seed, select_cfg.problems_per_difficulty,
                                        eval_cfg.difficulties)
    variants = []
    for k in select_cfg.shots:
      for f in select_cfg.formats:
        tick = time.perf_counter()
        rows = evaluate(model, f, k, prompt_cfg.shot_seed, validation, eval_cfg, key)
        variants.append({"format": f, "shots": k, "seconds": time.perf_counter() - tick,
                         "mean_accuracy": float(np.mean([r["accuracy"] for r in rows.values()])),
                         "by_difficulty": {str(d): r for d, r in rows.items()}})
    # The first best in grid order wins ties.
    best = max(range(len(variants)), key=lambda i: (variants[i]["mean_accuracy"], -i))
    chosen = (variants[best]["format"], variants[best]["shots"])
    results["selection"] = {"variants": variants, "chosen": dict(zip(("format", "shots"),
                                                                     chosen))}
  tick = time.perf_counter()
  test = problems_by_difficulty(eval_cfg.seed, eval_cfg.problems_per_difficulty,
                                eval_cfg.difficulties)
  rows = evaluate(model, *chosen, prompt_cfg.shot_seed, test, eval_cfg, key)
  for row in rows.values():
    row["interval"] = wilson_interval(row["correct"], row["total"], eval_cfg.confidence)
  results["test"] = {"format": chosen[0], "shots": chosen[1],
                     "seconds": time.perf_counter() - tick,
                     "mean_accuracy": float(np.mean([r["accuracy"] for r in rows.values()])),
                     "by_difficulty": {str(d): r for d, r in rows.items()}}
  results["seconds"] = time.perf_counter() - start
  os.makedirs(workdir, exist_ok=True)
  atomic_file.write_json(os.path.join(workdir, "results.json"), results)
  return results


def results_table(results: dict) -> str:
  """Validation accuracy per variant, then test accuracy by difficulty with its interval."""
  confidence = results["config"]["eval"]["confidence"]
  lines = []
  if "selection" in results:
    variants = results["selection"]["variants"]
    difficulties = list(variants[0]["by_difficulty"])
    lines.append("validation accuracy (prompt variant x difficulty):")
    lines.append(f"{'variant':<12}" + "".join(f"{d:>6}" for d in difficulties) + "    mean")
    for v in variants:
      lines.append(f"{v['format'] + ' k=' + str(v['shots']):<12}" + "".join(
          f"{v['by_difficulty'][d]['accuracy']:>6.2f}" for d in difficulties)
          + f"  {v['mean_accuracy']:>6.3f}")
    chosen = results["selection"]["chosen"]
    lines.append(f"chosen: {chosen['format']} k={chosen['shots']}")
  test = results["test"]
  lines.append(f"test ({test['format']} k={test['shots']}, greedy): accuracy by difficulty, "
               f"{confidence:.0%} Wilson interval")
  lines.append(f"{'difficulty':>10} {'correct':>9} {'accuracy':>9} {'interval':>15} "
               f"{'answered':>9} {'seconds':>8}")
  for d, r in test["by_difficulty"].items():
    lo, hi = r["interval"]
    lines.append(f"{d:>10} {r['correct']:>4}/{r['total']:<4} {r['accuracy']:>9.3f} "
                 f"{f'[{lo:.2f}, {hi:.2f}]':>15} {r['answered']:>9.2f} {r['seconds']:>8.0f}")
  lines.append(f"mean accuracy {test['mean_accuracy']:.3f}; test {test['seconds']:.0f} s, "
               f"total {results['seconds']:.0f} s")
  return "\n".join(lines)
