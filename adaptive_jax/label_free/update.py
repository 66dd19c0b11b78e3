"""Policy updates of the label-free loop: fine-tuning on chosen samples, and GRPO.

Rows are a prompt's ids then a completion's ids (stop token included), right padded;
mask_NxT[t] = 1 where token t + 1 is a completion token, as `policy.lora_fine_tune` marks
gold solutions, so one loss (`lora_fine_tune.completion_loss`) serves gold and chosen samples.

GRPO (Shao et al., 2024) on one round's samples, per completion token t of sample i, with
log-probabilities at the temperature T that drew the samples (logits / T):
  ratio = exp(logp_t - old_t),  pg = -min(ratio A_i, clip(ratio, 1 - c, 1 + c) A_i),
  kl = exp(ref_t - logp_t) - (ref_t - logp_t) - 1        (k3, >= 0; 0 at the reference)
  loss = mean_i [ mean_t (pg + beta kl) ]
old = the policy that drew the samples, ref = the start policy. AdamW at a constant
learning rate trains every weight (full fine-tuning), or, given a `LoraSpec`, low-rank
adapters on every attention and FFN kernel of the round's starting params (B = 0: the first
step starts at them), merged into the params the update returns.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from adaptive_jax.nn import lora
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.policy.logprobs import token_logprobs
from adaptive_jax.policy.lora_fine_tune import completion_loss

ROW_MULTIPLE = 32  # rows are padded to a multiple of this: few compiled widths
_LORA_KEY = 0x7FFFFFFF  # fold_in data of the adapters' initialization (batches use 0..steps-1)


@dataclasses.dataclass(frozen=True)
class LoraSpec:
  """Low-rank adapters of `rank` on every kernel `nn.lora` adapts, scaled alpha / rank."""
  rank: int
  alpha: float

  def __post_init__(self):
    if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
      raise ValueError(f"lora rank must be an integer >= 1, got {self.rank!r}")
    if not (isinstance(self.alpha, (int, float)) and np.isfinite(self.alpha) and self.alpha > 0):
      raise ValueError(f"lora alpha must be a finite number > 0, got {self.alpha!r}")


def _start(params, spec: LoraSpec | None, key):
  """(trainable, backbone): a copy of the params (their steps donate it), or fresh adapters
  over the params."""
  if spec is None:
    return jax.tree.map(jnp.array, params), None
  params = nn.meta.unbox(params)
  return lora.init_lora(params, rank=spec.rank, key=jax.random.fold_in(key, _LORA_KEY)), params


def _params(spec: LoraSpec | None, trainable, backbone):
  """The model params a loss reads: the trainable tree itself, or the adapters merged."""
  if spec is None:
    return trainable
  return lora.merge_lora(backbone, trainable, alpha=spec.alpha, rank=spec.rank)


def example_rows(prompt_ids, completion_ids, pad_id: int, *, multiple: int = ROW_MULTIPLE):
  """(tokens_NxT int32, mask_NxT float32) of prompt + completion rows (see the module doc)."""
  if len(prompt_ids) != len(completion_ids) or not prompt_ids:
    raise ValueError(f"need as many prompts as completions, at least one; got "
                     f"{len(prompt_ids)} and {len(completion_ids)}")
  width = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
  width = -(-width // multiple) * multiple
  tokens_NxT = np.full((len(prompt_ids), width), pad_id, np.int32)
  mask_NxT = np.zeros((len(prompt_ids), width), np.float32)
  for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
    if not len(p) or not len(c):
      raise ValueError(f"row {i}: prompt and completion must be non-empty")
    tokens_NxT[i, :len(p) + len(c)] = np.concatenate([p, c])
    mask_NxT[i, len(p) - 1:len(p) + len(c) - 1] = 1.0
  return tokens_NxT, mask_NxT


_token_logprobs = jax.jit(token_logprobs, static_argnums=(0, 3))


def _chunked_logprobs(cfg, params, tokens_NxT, temperature: float, rows: int) -> np.ndarray:
  """token_logprobs `rows` rows at a time: the [rows, T, V] logits bound the memory."""
  return np.concatenate([np.asarray(_token_logprobs(cfg, params, tokens_NxT[i:i + rows],
                                                    temperature))
                         for i in range(0, len(tokens_NxT), rows)])


def grpo_loss(cfg: ModelConfig, params, tokens_BxT, mask_BxT, advantage_B, old_BxT, ref_BxT, *,
              clip: float, kl_weight: float, temperature: float = 1.0):
  """(loss, kl): the module doc's GRPO objective on a batch of rows."""
  logp_BxT = token_logprobs(cfg, params, tokens_BxT, temperature)
  ratio_BxT = jnp.exp(logp_BxT - old_BxT)
  a_Bx1 = advantage_B[:, None]
  pg_BxT = -jnp.minimum(ratio_BxT * a_Bx1, jnp.clip(ratio_BxT, 1 - clip, 1 + clip) * a_Bx1)
  delta_BxT = ref_BxT - logp_BxT
  kl_BxT = jnp.exp(delta_BxT) - delta_BxT - 1
  count_B = jnp.maximum(mask_BxT.sum(1), 1.0)
  # where, not a product: an overflow outside the completion must not turn the sum into NaN.
  per_row = lambda x_BxT: jnp.sum(jnp.where(mask_BxT > 0, x_BxT, 0.0), 1) / count_B
  return jnp.mean(per_row(pg_BxT + kl_weight * kl_BxT)), jnp.mean(per_row(kl_BxT))


def _optimizer(learning_rate: float):
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(learning_rate, weight_decay=0.0))


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3, 4))
def _sft_step(cfg, learning_rate, spec, trainable, opt_state, backbone, tokens_BxT, mask_BxT):
  loss, grads = jax.value_and_grad(lambda t: completion_loss(
      cfg, _params(spec, t, backbone), tokens_BxT, mask_BxT))(trainable)
  updates, opt_state = _optimizer(learning_rate).update(grads, opt_state, trainable)
  return optax.apply_updates(trainable, updates), opt_state, loss


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5), donate_argnums=(6, 7))
def _grpo_step(cfg, learning_rate, clip, kl_weight, temperature, spec, trainable, opt_state,
               backbone, batch):
  (loss, kl), grads = jax.value_and_grad(
      lambda t: grpo_loss(cfg, _params(spec, t, backbone), *batch, clip=clip,
                          kl_weight=kl_weight, temperature=temperature), has_aux=True)(trainable)
  updates, opt_state = _optimizer(learning_rate).update(grads, opt_state, trainable)
  return optax.apply_updates(trainable, updates), opt_state, loss, kl


def _batches(num_rows: int, steps: int, batch_size: int, key):
  """Row indices of each step: uniform draws with replacement from `fold_in(key, step)`."""
  for i in range(steps):
    yield np.asarray(jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0, num_rows))


def fine_tune(params, cfg: ModelConfig, tokens_NxT, mask_NxT, *, steps: int, batch_size: int,
              learning_rate: float, key, lora_spec: LoraSpec | None = None):
  """(params, losses): `steps` AdamW steps of completion cross entropy on the rows (every
  weight, or `lora_spec`'s adapters, merged into the returned params)."""
  trainable, backbone = _start(params, lora_spec, key)
  opt_state = _optimizer(learning_rate).init(trainable)
  losses = []
  for idx_B in _batches(len(tokens_NxT), steps, batch_size, key):
    trainable, opt_state, loss = _sft_step(cfg, learning_rate, lora_spec, trainable, opt_state,
                                           backbone, jnp.asarray(tokens_NxT[idx_B]),
                                           jnp.asarray(mask_NxT[idx_B]))
    losses.append(float(loss))
  return _params(lora_spec, trainable, backbone), losses


def grpo(params, ref_params, cfg: ModelConfig, tokens_NxT, mask_NxT, advantage_N, *, steps: int,
         batch_size: int, learning_rate: float, clip: float, kl_weight: float,
         temperature: float, key, lora_spec: LoraSpec | None = None):
  """(params, {'loss': [...], 'kl': [...]}): `steps` GRPO steps on rows that `params` drew at
  `temperature` (every weight, or `lora_spec`'s adapters, merged into the returned params)."""
  tokens_NxT = jnp.asarray(tokens_NxT)
  old_NxT = _chunked_logprobs(cfg, params, tokens_NxT, temperature, batch_size)
  ref_NxT = _chunked_logprobs(cfg, ref_params, tokens_NxT, temperature, batch_size)
  trainable, backbone = _start(params, lora_spec, key)
  opt_state = _optimizer(learning_rate).init(trainable)
  log = {"loss": [], "kl": []}
  for idx_B in _batches(len(old_NxT), steps, batch_size, key):
    batch = (tokens_NxT[idx_B], jnp.asarray(mask_NxT[idx_B]),
             jnp.asarray(advantage_N[idx_B], jnp.float32), jnp.asarray(old_NxT[idx_B]),
             jnp.asarray(ref_NxT[idx_B]))
    trainable, opt_state, loss, kl = _grpo_step(cfg, learning_rate, clip, kl_weight,
                                                temperature, lora_spec, trainable, opt_state,
                                                backbone, batch)
    log["loss"].append(float(loss))
    log["kl"].append(float(kl))
  return _params(lora_spec, trainable, backbone), log
