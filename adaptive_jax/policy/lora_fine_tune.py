"""A short LoRA fine-tune of a pretrained LM on gold solutions (SmolLM2 on the arithmetic task).

Each example is EOS, the question's prompt, then its gold completion and EOS, as the sampler
reads and writes them (`policy.evaluate.complete`):
`[eos] + encode(format_prompt(p)) + encode(format_completion(p)) + [eos]`, the prompt encoded
alone, as the sampler encodes it. The loss is the next-token cross
entropy on the completion and the EOS only. Low-rank adapters (nn/lora.py) on every attention
and FFN kernel train; the pretrained weights are frozen (symbolic-zero gradients). The
adapters (a few MB) are what is saved; `merge` adds them to the weights, a plain params tree for
the sampler and the PRM.

Batches: step i draws `batch_size` problems of one difficulty, `difficulties[i % len]`, with
replacement (`fold_in(key, i)`), padded to that difficulty's longest example: rows of similar
length, one compiled step per difficulty, instead of every row padded to the longest question.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adaptive_jax.nn import lora
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.policy.prompt import encode_prompt
from adaptive_jax.tasks.problem import Problem, format_completion, format_prompt
from adaptive_jax.typed_config import check_int, check_open_interval


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
  """See configs/calibrate_smollm2.py."""
  steps: int = 120
  batch_size: int = 16
  learning_rate: float = 1e-3
  warmup_steps: int = 10
  lora_rank: int = 16
  lora_alpha: float = 32.0
  weight_decay: float = 0.0
  seed: int = 0

  def __post_init__(self):
    for name in ("steps", "batch_size", "lora_rank"):
      check_int("fine_tune", name, getattr(self, name))
    for name in ("warmup_steps", "seed"):
      check_int("fine_tune", name, getattr(self, name), minimum=0)
    for name in ("learning_rate", "lora_alpha"):
      check_open_interval("fine_tune", name, getattr(self, name), 0.0)
    if self.weight_decay < 0:
      raise ValueError(f"fine_tune.weight_decay must be >= 0, got {self.weight_decay}")


def encode_example(tokenizer, problem: Problem) -> tuple[list[int], int]:
  """(ids, prompt length): EOS and the prompt's ids, the gold completion's, then EOS."""
  prompt = encode_prompt(tokenizer, format_prompt(problem))
  return prompt + tokenizer.encode(format_completion(problem)) + [tokenizer.eos_id], len(prompt)


def padded_examples(tokenizer, problems: Sequence[Problem]):
  """tokens_NxT (right padded with the tokenizer's pad) and loss_mask_NxT: 1 where position t's next
  token (t + 1) is a completion token or the EOS."""
  encoded = [encode_example(tokenizer, p) for p in problems]
  width = max(len(ids) for ids, _ in encoded)
  tokens_NxT = np.full((len(encoded), width), tokenizer.pad_id, np.int32)
  mask_NxT = np.zeros((len(encoded), width), np.float32)
  for i, (ids, prompt_len) in enumerate(encoded):
    tokens_NxT[i, :len(ids)] = ids
    mask_NxT[i, prompt_len - 1:len(ids) - 1] = 1.0
  return tokens_NxT, mask_NxT


def completion_loss(cfg: ModelConfig, params, tokens_BxT, mask_BxT):
  """Mean next-token cross entropy over the masked positions."""
  logits_BxTxV = Transformer(cfg).apply({"params": params}, tokens_BxT)
  nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV[:, :-1],
                                                            tokens_BxT[:, 1:])
  mask_BxT = mask_BxT[:, :-1]
  return jnp.sum(nll_BxT * mask_BxT) / jnp.maximum(jnp.sum(mask_BxT), 1.0)


def merge(params, adapters, ft: FineTuneConfig):
  """`params` with the adapters merged in: a plain params tree."""
  return lora.merge_lora(params, adapters, alpha=ft.lora_alpha, rank=ft.lora_rank)


def fine_tune(params, cfg: ModelConfig, tokenizer, problems_by_difficulty: dict[int, list],
              ft: FineTuneConfig, log_every: int = 0):
  """(adapters, per-step losses): `ft.steps` AdamW steps on LoRA adapters of `params`
  (`merge` gives the fine-tuned params)."""
  if not problems_by_difficulty or not all(problems_by_difficulty.values()):
    raise ValueError("problems_by_difficulty needs at least one problem per difficulty")
  difficulties = sorted(problems_by_difficulty)
  data = {d: tuple(map(jnp.asarray, padded_examples(tokenizer, problems_by_difficulty[d])))
          for d in difficulties}
  batch_key, lora_key = jax.random.split(jax.random.key(ft.seed))
  adapters = lora.init_lora(params, rank=ft.lora_rank, key=lora_key)
  schedule = optax.warmup_cosine_decay_schedule(0.0, ft.learning_rate, ft.warmup_steps,
                                                max(ft.steps, ft.warmup_steps + 1))
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(schedule, weight_decay=ft.weight_decay))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(adapters, opt_state, params, tokens_NxT, mask_NxT, key):
    idx_B = jax.random.randint(key, (ft.batch_size,), 0, tokens_NxT.shape[0])
    frozen = jax.lax.stop_gradient(params)
    loss, grads = jax.value_and_grad(lambda a: completion_loss(
        cfg, merge(frozen, a, ft), tokens_NxT[idx_B], mask_NxT[idx_B]))(adapters)
    updates, opt_state = tx.update(grads, opt_state, adapters)
    return optax.apply_updates(adapters, updates), opt_state, loss

  opt_state = tx.init(adapters)
  losses = []
  for i in range(ft.steps):
    tokens_NxT, mask_NxT = data[difficulties[i % len(difficulties)]]
    adapters, opt_state, loss = step(adapters, opt_state, params, tokens_NxT, mask_NxT,
                                     jax.random.fold_in(batch_key, i))
    losses.append(float(loss))
    if log_every and (i + 1) % log_every == 0:
      print(f"fine-tune step {i + 1}/{ft.steps}: loss {np.mean(losses[-log_every:]):.4f}",
            flush=True)
  return adapters, losses
