"""Policy accuracy by difficulty: sample solutions with the device sampler, check the answers."""

import jax
import numpy as np

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.policy.prompt import encode_prompt
from adaptive_jax.sampler.decode import DecodeConfig, SamplingPolicy, sample_rows
from adaptive_jax.scaling.pass_at_k import unbiased_pass_at_k
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from adaptive_jax.tasks.problem import format_prompt

MAX_ROWS = 512  # sequences per decode call: bounds the KV cache's memory


def complete(params, model_cfg: ModelConfig, prompts: list[str], tokenizer: ByteTokenizer, *,
             key, max_new_tokens: int, policy: SamplingPolicy) -> list[str]:
  """One sampled continuation per prompt text, decoded, stopping at EOS (not included)."""
  if len(prompts) > MAX_ROWS:
    return [text for start in range(0, len(prompts), MAX_ROWS)
            for text in complete(params, model_cfg, prompts[start:start + MAX_ROWS], tokenizer,
                                 key=jax.random.fold_in(key, start),
                                 max_new_tokens=max_new_tokens, policy=policy)]
  ids = [encode_prompt(tokenizer, text) for text in prompts]
  budgets = [context_budget(len(row), max_new_tokens, model_cfg.max_len) for row in ids]
  texts = [""] * len(ids)
  for budget in sorted(set(budgets), reverse=True):
    rows = [i for i, b in enumerate(budgets) if b == budget]
    dec = DecodeConfig(max_new_tokens=budget, policy=policy, stop_tokens=(tokenizer.eos_id,),
                       pad_id=tokenizer.pad_id)
    # Rows with the whole budget draw with `key` (row b: key b of its split), the others with
    # a key of their budget.
    group_key = key if budget == max_new_tokens else jax.random.fold_in(key, budget)
    new_tokens = sample_rows(params, [ids[i] for i in rows], group_key, cfg=model_cfg, dec=dec,
                             filler_id=tokenizer.eos_id)
    for i, row in zip(rows, new_tokens):
      texts[i] = tokenizer.decode(row)
  return texts


def context_budget(prompt_len: int, max_new_tokens: int, max_len: int,
                   multiple: int = 32) -> int:
  """New tokens a prompt of `prompt_len` tokens may draw: max_new_tokens, or where the model's
  context leaves less, the room left (max_len + 1 - prompt_len) rounded down to `multiple`
  (a few compiled shapes). A continuation that reaches it stops there, as one reaching
  max_new_tokens does: a rollout from a long solution prefix needs only the rest of it."""
  room = max_len + 1 - prompt_len
  if room >= max_new_tokens:
    return max_new_tokens
  if room < multiple:
    raise ValueError(f"a prompt of {prompt_len} tokens leaves {room} new tokens of "
                     f"model.max_len={max_len}; at least {multiple} are needed")
  return room // multiple * multiple


def solve(params, model_cfg: ModelConfig, problems, tokenizer: ByteTokenizer, *, key,
          max_new_tokens: int, policy: SamplingPolicy = SamplingPolicy(temperature=0.0),
          samples_per_problem: int = 1) -> list[list[str]]:
  """Completions [problem][sample] of each problem's prompt."""
  prompts = [format_prompt(p) for p in problems for _ in range(samples_per_problem)]
  texts = complete(params, model_cfg, prompts, tokenizer, key=key,
                   max_new_tokens=max_new_tokens, policy=policy)
  return [texts[i:i + samples_per_problem] for i in range(0, len(texts), samples_per_problem)]


def accuracy_by_difficulty(params, model_cfg, source, tokenizer, *, key, max_new_tokens: int,
                           batch_size: int = 64) -> dict[int, float]:
  """Greedy accuracy per difficulty over every problem of `source`, scored by `source.check`."""
  correct, total = {}, {}
  problems = [source[i] for i in range(len(source))]
  for start in range(0, len(problems), batch_size):
    chunk = problems[start:start + batch_size]
    completions = solve(params, model_cfg, chunk, tokenizer, key=jax.random.fold_in(key, start),
                        max_new_tokens=max_new_tokens)
    for problem, (text,) in zip(chunk, completions):
      d = problem.difficulty
      correct[d] = correct.get(d, 0) + int(source.check(problem, text))
      total[d] = total.get(d, 0) + 1
  return {d: correct[d] / total[d] for d in sorted(total)}


def pass_at_k_by_difficulty(params, model_cfg, source, tokenizer, *, key, max_new_tokens: int,
                            samples: int, temperature: float, ks) -> dict[int, dict[int, float]]:
  """{difficulty: {k: mean unbiased pass@k}} from `samples` sampled solutions per problem."""
  problems = [source[i] for i in range(len(source))]
  completions = solve(params, model_cfg, problems, tokenizer, key=key,
                      max_new_tokens=max_new_tokens, policy=SamplingPolicy(temperature=temperature),
                      samples_per_problem=samples)
  correct_PxN = np.array([[source.check(p, text) for text in texts]
                          for p, texts in zip(problems, completions)])
  difficulty_P = np.array([p.difficulty for p in problems])
  return {int(d): {k: float(unbiased_pass_at_k(correct_PxN[difficulty_P == d], k).mean())
                   for k in ks if k <= samples}
          for d in np.unique(difficulty_P)}
