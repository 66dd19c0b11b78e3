"""One round of the label-free loop for one arm: draw candidates, choose, update the policy.

Arms (`label_free.arms`), each with the round's prompts and the same number of samples:
  majority          fine-tune on a sample holding the majority answer (TTRL's pseudo-label,
                    here a fine-tuning target rather than TTRL's RL reward)
  best_of_n         fine-tune on the verifier's best of N (rejection-sampling fine-tuning)
  budget_best_of_n  the same, the round's Q * N samples spread over the prompts by the
                    budget-aware allocator (`allocation.budget`) on the calibrated PRM's
                    estimate at the empty prefix (fit for the start policy)
  grpo              GRPO with the verifier's score as reward and a KL to the start policy
  rule_best_of_n    best_of_n with the rule verifier (`tasks.step_checker`) in place of the
                    learned one, trained only on samples it passes whole (score 1: every line
                    right, the answer line there): an exact step checker, the stand-in for a
                    perfect verifier. It reads only the question, yet it can solve the task: a
                    ceiling of what a verifier gives the loop, not a label-free method.
The labelled reference arm (fine-tuning on gold solutions) lives with the study, not here:
nothing in this module can see a label, its prompts are `UnlabelledPrompt`s. A round is two
calls: `draw_round` (once), then `update_round` (once per learning rate tried).
"""

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from adaptive_jax.allocation import budget
from adaptive_jax.label_free import arms, pseudo_labels, update
from adaptive_jax.label_free.prompts import require_unlabelled
from adaptive_jax.prm import scoring
from adaptive_jax.prm.model import encode_texts
from adaptive_jax.sampler import draws, selection
from adaptive_jax.studies import ias_models
from adaptive_jax.tasks import step_checker
from adaptive_jax.tasks.problem import format_prompt

ARMS = arms.SAMPLING
RULE_PASSES = 1.0  # the rule verifier's score of a sample it passes whole


@dataclasses.dataclass(frozen=True)
class UpdateSettings:
  samples_per_prompt: int  # N: every arm draws Q * N samples per round
  budget_n_max: int  # budget_best_of_n: at most this many samples per prompt
  min_score: float  # best_of_n arms: a best sample below this score is not trained on
  steps: int  # optimizer steps per round (every arm)
  batch_size: int
  learning_rate: float  # the arm's (fine-tuning or GRPO)
  grpo_clip: float
  grpo_kl: float
  temperature: float  # the samples' (GRPO's log-probabilities are taken at it)
  rows: int  # rows per decode call
  lora_spec: update.LoraSpec | None = None  # None: full fine-tuning


class Candidates(NamedTuple):
  """Samples of Q prompts in slots 0..N-1; slots >= drawn_Q[q] hold nothing (NO_ANSWER)."""
  answers_QxN: np.ndarray
  reward_QxN: np.ndarray  # the verifier's score, in [0, 1]
  tokens_QxNxM: np.ndarray
  lengths_QxN: np.ndarray
  drawn_Q: np.ndarray


def reward_score_fn(models: ias_models.Models, channel: str, temperature: float = 1.0):
  """A draws.ScoreFn with one channel: the verifier's probability at the sample's last step,
  `channel` "verifier" (the learned step verifier) or "calibrated" (the calibrated PRM's mean);
  or "likelihood": the drawing policy's own geometric-mean token probability at `temperature`
  (`ias_models.likelihood`; scorer["likelihood"] holds the policy's params).
  """
  if channel == "likelihood":
    return lambda scorer, tokens_BxT, prompt_len_B, length_B: ias_models.likelihood(
        scorer["likelihood"], models.policy_cfg, tokens_BxT, prompt_len_B, length_B,
        temperature)[:, None]
  if channel == "verifier" and models.step_verifier is None:
    raise ValueError("label_free.reward='verifier' needs the calibration study's step verifier "
                     "(calibrate prm.step_verifier_steps > 0); use 'calibrated'")
  column = 0 if channel == "verifier" else scoring.columns(models.levels)["mean"]
  quantiles = 0 if channel == "verifier" else len(models.levels)
  ends_S = jnp.asarray(models.step_end_ids, jnp.int32)

  def score(scorer, tokens_BxT, prompt_len_B, length_B):
    p_BxT = scoring.position_probabilities(scorer[channel], tokens_BxT, model_cfg=models.prm_cfg,
                                           num_quantiles=quantiles)[..., column]
    t_T = jnp.arange(tokens_BxT.shape[1])
    step_BxT = (jnp.isin(tokens_BxT, ends_S) & (t_T >= prompt_len_B[:, None])
                & (t_T < (prompt_len_B + length_B)[:, None]))
    return selection.sample_scores(p_BxT, step_BxT, "last")[:, None]
  return score


def draw(live: draws.LiveDraw, data: dict, drawn_Q, n: int, *, rows: int) -> Candidates:
  """Samples 0..drawn_Q[q]-1 of every prompt q (`draws.draw_pairs`), laid out [Q, n]."""
  drawn_Q = np.asarray(drawn_Q, np.int64)
  question_P = np.repeat(np.arange(len(drawn_Q)), drawn_Q)
  slot_P = np.concatenate([np.arange(k) for k in drawn_Q])
  out = draws.draw_pairs(live, data, question_P, slot_P, rows=rows)
  q, m = len(drawn_Q), out["tokens_BxM"].shape[1]
  answers_QxN = np.full((q, n), selection.NO_ANSWER, np.int64)
  reward_QxN = np.zeros((q, n), np.float64)
  tokens_QxNxM = np.full((q, n, m), live.dec.pad_id, np.int32)
  lengths_QxN = np.zeros((q, n), np.int64)
  answers_QxN[question_P, slot_P] = out["answers_B"]
  reward_QxN[question_P, slot_P] = out["scores_BxC"][:, 0]
  tokens_QxNxM[question_P, slot_P] = out["tokens_BxM"]
  lengths_QxN[question_P, slot_P] = out["lengths_B"]
  return Candidates(answers_QxN, reward_QxN, tokens_QxNxM, lengths_QxN, drawn_Q)


def calibrated_estimate(models: ias_models.Models, prompts) -> np.ndarray:
  """p_Q: the calibrated PRM's mean at the end of each prompt (the empty solution prefix)."""
  tokens_NxT = encode_texts([format_prompt(p) for p in prompts], models.prm_cfg.max_len,
                            tokenizer=models.tokenizer)
  last_N = (tokens_NxT != models.tokenizer.pad_id).sum(1) - 1
  probs_NxTxK = scoring.position_probabilities(models.calibrated, tokens_NxT,
                                               model_cfg=models.prm_cfg,
                                               num_quantiles=len(models.levels))
  mean = scoring.columns(models.levels)["mean"]
  return np.asarray(probs_NxTxK)[np.arange(len(prompts)), last_N, mean].astype(np.float64)


@dataclasses.dataclass(frozen=True)
class Drawn:
  """What an arm drew in a round: the same for every learning rate it tries."""
  candidates: Candidates
  estimate_Q: np.ndarray | None  # budget_best_of_n: the allocator's estimate


@dataclasses.dataclass(frozen=True)
class RoundOutput:
  params: dict
  chosen_Q: np.ndarray  # the slot trained on per prompt (-1: none); GRPO: -1 everywhere
  # Token-forwards of the update, for the FLOP count: 3 per token an optimizer step read
  # (forward and backward), 1 per token of GRPO's old and reference log-probabilities.
  forward_tokens: int
  log: dict


def draw_round(arm: str, params, models: ias_models.Models, prompts, live: draws.LiveDraw,
               data: dict, settings: UpdateSettings) -> Drawn:
  """`arm`'s candidates for `prompts` (UnlabelledPrompts), drawn by `params` (`data` is the
  LiveDraw's, its "policy" replaced): N per prompt, or for budget_best_of_n the Q * N samples
  the allocator spreads (it buys no sample whose gain is 0, so it may draw fewer)."""
  if arm not in ARMS:
    raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
  prompts = require_unlabelled(prompts)
  q, n = len(prompts), settings.samples_per_prompt
  data = {**data, "policy": params}
  estimate_Q, width, drawn_Q = None, n, np.full(q, n)
  if arm == "budget_best_of_n":
    estimate_Q = np.clip(calibrated_estimate(models, prompts), 0.0, 1.0)
    drawn_Q = budget.greedy_allocation(estimate_Q, q * n, n_max=settings.budget_n_max)
    width = settings.budget_n_max
  cand = draw(live, data, drawn_Q, width, rows=settings.rows)
  if arm == arms.RULE:
    cand = cand._replace(reward_QxN=rule_scores(prompts, cand, models.tokenizer))
  return Drawn(cand, estimate_Q)


def update_round(arm: str, params, start_params, models: ias_models.Models, prompts,
                 drawn: Drawn, settings: UpdateSettings, key) -> RoundOutput:
  """`arm`'s update of `params` from what it drew: choose the training rows, then fine-tune
  (or GRPO) with `settings.learning_rate`; `key` draws the batches."""
  if arm not in ARMS:
    raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
  prompts = require_unlabelled(prompts)
  cand, q, n = drawn.candidates, len(prompts), settings.samples_per_prompt
  prompt_ids = ias_models.prompt_ids(prompts, models.tokenizer)
  sample = lambda i, s: cand.tokens_QxNxM[i, s, :cand.lengths_QxN[i, s]]
  if arm == "grpo":
    advantage_QxN = pseudo_labels.advantages(cand.reward_QxN)
    kept = [(i, s) for i in range(q) for s in range(n) if advantage_QxN[i, s] != 0]
    if not kept:
      return RoundOutput(params, np.full(q, -1), 0, {"rows": 0})
    tokens_NxT, mask_NxT = update.example_rows([prompt_ids[i] for i, _ in kept],
                                               [sample(i, s) for i, s in kept],
                                               models.tokenizer.pad_id)
    new, log = update.grpo(params, start_params, models.policy_cfg, tokens_NxT, mask_NxT,
                           np.array([advantage_QxN[i, s] for i, s in kept]),
                           steps=settings.steps, batch_size=settings.batch_size,
                           learning_rate=settings.learning_rate, clip=settings.grpo_clip,
                           kl_weight=settings.grpo_kl, temperature=settings.temperature, key=key,
                           lora_spec=settings.lora_spec)
    return RoundOutput(new, np.full(q, -1), train_forward_tokens(settings, tokens_NxT.shape[1])
                       + 2 * tokens_NxT.size, {**log, "rows": len(kept)})
  if arm == "majority":
    chosen_Q = pseudo_labels.majority(cand.answers_QxN, cand.drawn_Q)
  else:
    min_score = RULE_PASSES if arm == arms.RULE else settings.min_score
    chosen_Q = pseudo_labels.best(cand.answers_QxN, cand.reward_QxN, cand.drawn_Q,
                                  min_score=min_score)
  kept_K = np.flatnonzero(chosen_Q >= 0)
  if not len(kept_K):
    return RoundOutput(params, chosen_Q, 0, {"rows": 0})
  tokens_KxT, mask_KxT = update.example_rows([prompt_ids[i] for i in kept_K],
                                             [sample(i, chosen_Q[i]) for i in kept_K],
                                             models.tokenizer.pad_id)
  new, losses = update.fine_tune(params, models.policy_cfg, tokens_KxT, mask_KxT,
                                 steps=settings.steps, batch_size=settings.batch_size,
                                 learning_rate=settings.learning_rate, key=key,
                                 lora_spec=settings.lora_spec)
  return RoundOutput(new, chosen_Q, train_forward_tokens(settings, tokens_KxT.shape[1]),
                     {"loss": losses, "rows": len(kept_K)})


def rule_scores(prompts, cand: Candidates, tokenizer) -> np.ndarray:
  """reward_QxN of the rule verifier on each drawn sample's text (host); 0 where none."""
  reward_QxN = np.zeros(cand.answers_QxN.shape)
  for q, prompt in enumerate(prompts):
    for s in range(cand.drawn_Q[q]):
      text = tokenizer.decode(cand.tokens_QxNxM[q, s, :cand.lengths_QxN[q, s]])
      reward_QxN[q, s] = step_checker.score(prompt.question, text)
  return reward_QxN


def train_forward_tokens(settings: UpdateSettings, width: int) -> int:
  """3x the tokens the optimizer steps read (forward and backward): batch rows of the padded
  width, every step."""
  return int(3 * settings.steps * settings.batch_size * width)


def sample_flops(cand: Candidates, prompt_len_Q, policy_flops: float,
                 prm_flops: float) -> float:
  """Prompt and sample tokens of every drawn sample, which the policy reads (prefill and
  decode) and the verifier reads once, each times its FLOPs per token."""
  drawn_QxN = np.arange(cand.answers_QxN.shape[1])[None, :] < cand.drawn_Q[:, None]
  read = float(np.sum(np.where(drawn_QxN, cand.lengths_QxN, 0))
               + np.sum(np.asarray(prompt_len_Q) * cand.drawn_Q))
  return read * (policy_flops + prm_flops)

