"""The models an IAS study reads: the policy, the calibration study's PRMs and step verifier,
how they score a sample and a question, and the combined estimate fit on calibration records.
"""

import dataclasses
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.allocation import combined
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.policy.load import load_policy
from adaptive_jax.policy.logprobs import token_logprobs
from adaptive_jax.policy.prompt import encode_prompt
from adaptive_jax.prm import mc_data, saved, scoring
from adaptive_jax.prm.model import encode_texts
from adaptive_jax.sampler import decode, draws, selection
from adaptive_jax.tasks.answer_tokens import step_end_ids
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from adaptive_jax.tasks.problem import format_prompt

TOKENIZER = ByteTokenizer()
# Score channels of every sample, in order: the calibrated PRM's mean at the last step and its
# minimum over steps, the same two of the base PRM, of the learned step verifier (when
# trained), the policy's own likelihood of the sample, then the rule verifier's score (host,
# from the sample's text).
PRM_CHANNELS = ("calibrated_last", "calibrated_min", "base_last", "base_min")
VERIFIER_CHANNELS = ("verifier_last", "verifier_min")
LIKELIHOOD = "likelihood"
RULE = "rule"


@dataclasses.dataclass(frozen=True)
class Models:
  policy: dict
  policy_cfg: ModelConfig
  base: dict
  calibrated: dict
  prm_cfg: ModelConfig
  levels: tuple
  tokenizer: object = TOKENIZER  # the policy's: byte, or a pretrained model's TaskTokenizer
  # The calibrated PRM kept the base PRM's backbone and head (calibration under 'head'): its
  # own base column is the base PRM's probability, and one forward pass gives both.
  base_in_calibrated: bool = False
  step_verifier: dict | None = None  # the learned step verifier, when the calibration trained it

  @property
  def step_end_ids(self) -> tuple[int, ...]:
    return step_end_ids(self.tokenizer)

  @property
  def channels(self) -> tuple[str, ...]:
    return (PRM_CHANNELS + (VERIFIER_CHANNELS if self.step_verifier is not None else ())
            + (LIKELIHOOD, RULE))


def likelihood(policy, policy_cfg: ModelConfig, tokens_BxT, prompt_len_B, length_B,
               temperature: float):
  """score_B = exp(mean log p(token)) over each sample's generated tokens: the geometric-mean
  probability the policy gave the tokens it drew, p = softmax(logits / temperature) (the
  distribution it sampled from), teacher-forced on right-padded rows. A wrong number in a
  solution is usually a token drawn from the tail, so a low score flags it (within-difficulty
  AUC of right vs wrong answers 0.83 on ias_small's test pool, the learned step verifier 0.56:
  docs/ias.md). In [0, 1]; 0 for a sample with no tokens."""
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0 (the distribution the samples were drawn from), "
                     f"got {temperature!r}")
  logp_BxT = token_logprobs(policy_cfg, policy, tokens_BxT, temperature)  # of token t + 1
  t_T = jnp.arange(1, tokens_BxT.shape[1] + 1)  # the position of the token each column scores
  drawn_BxT = (t_T >= prompt_len_B[:, None]) & (t_T < (prompt_len_B + length_B)[:, None])
  mean_B = jnp.sum(jnp.where(drawn_BxT, logp_BxT, 0.0), -1) / jnp.maximum(length_B, 1)
  return jnp.where(length_B > 0, jnp.exp(mean_B), 0.0)


def score_fn(prm_cfg: ModelConfig, levels, step_end_ids_S: tuple[int, ...],
             base_in_calibrated: bool = False, with_verifier: bool = False, *,
             policy_cfg: ModelConfig, temperature: float = 1.0):
  """score(scorer, tokens_BxT, prompt_len_B, length_B) -> scores_BxC, the channels of
  `Models.channels` but the rule verifier's; `scorer` = {"calibrated", "base", "verifier" (with
  `with_verifier`), "policy"} params. `policy_cfg` and `temperature`: the policy that drew the
  samples and the temperature it drew them at (the likelihood channel)."""
  cols = scoring.columns(levels)

  def score(scorer, tokens_BxT, prompt_len_B, length_B):
    cal_BxTxK = scoring.position_probabilities(scorer["calibrated"], tokens_BxT,
                                               model_cfg=prm_cfg, num_quantiles=len(levels))
    cal_BxT = cal_BxTxK[..., cols["mean"]]
    base_BxT = (cal_BxTxK[..., cols[scoring.BASE]] if base_in_calibrated else
                scoring.position_probabilities(scorer["base"], tokens_BxT, model_cfg=prm_cfg,
                                               num_quantiles=0)[..., 0])
    t_T = jnp.arange(tokens_BxT.shape[1])
    # Step boundaries of the solution: its newlines (the prompt's own is step 0).
    step_BxT = (jnp.isin(tokens_BxT, jnp.asarray(step_end_ids_S, jnp.int32))
                & (t_T >= prompt_len_B[:, None])
                & (t_T < (prompt_len_B + length_B)[:, None]))
    per_step = [cal_BxT, base_BxT]
    if with_verifier:
      per_step.append(scoring.position_probabilities(scorer["verifier"], tokens_BxT,
                                                     model_cfg=prm_cfg, num_quantiles=0)[..., 0])
    own_B = likelihood(scorer["policy"], policy_cfg, tokens_BxT, prompt_len_B, length_B,
                       temperature)
    return jnp.stack([selection.sample_scores(p_BxT, step_BxT, how)
                      for p_BxT in per_step for how in ("last", "min")] + [own_B], -1)
  return score


def unscored(scorer, tokens_BxT, prompt_len_B, length_B):
  """The design split's score function: nothing is scored (a zero channel)."""
  del scorer, prompt_len_B, length_B
  return jnp.zeros((tokens_BxT.shape[0], 1), jnp.float32)

def prompt_ids(problems, tokenizer=TOKENIZER) -> list[list[int]]:
  """Each problem's prompt as the policy reads it: EOS, then the question."""
  return [encode_prompt(tokenizer, format_prompt(p)) for p in problems]


def encode_prompts(problems, tokenizer=TOKENIZER) -> draws.Prompts:
  prompt_QxP, prompt_len_Q = decode.left_pad(prompt_ids(problems, tokenizer), tokenizer.pad_id)
  return draws.Prompts(jnp.asarray(prompt_QxP), jnp.asarray(prompt_len_Q))


def question_features(models: Models, prompts_text: list[str]) -> dict:
  """Step-0 PRM outputs and the policy's log-probability statistics of each question."""
  tokens_NxT = encode_texts(prompts_text, models.prm_cfg.max_len, tokenizer=models.tokenizer)
  last_N = (tokens_NxT != models.tokenizer.pad_id).sum(1) - 1
  rows = np.arange(len(prompts_text))
  cal = np.asarray(scoring.position_probabilities(
      models.calibrated, tokens_NxT, model_cfg=models.prm_cfg,
      num_quantiles=len(models.levels)))[rows, last_N]
  base = np.asarray(scoring.position_probabilities(
      models.base, tokens_NxT, model_cfg=models.prm_cfg, num_quantiles=0))[rows, last_N, 0]
  logprob_NxT = np.asarray(jax.jit(functools.partial(token_logprobs, models.policy_cfg))(
      models.policy, tokens_NxT))[:, :-1]
  real_NxT = np.arange(1, tokens_NxT.shape[1])[None, :] <= last_N[:, None]
  cols = scoring.columns(models.levels)
  return {
      "calibrated": cal[:, :cols[scoring.BASE]], "base": base,
      "logprob_mean": np.where(real_NxT, logprob_NxT, 0).sum(1) / real_NxT.sum(1),
      "logprob_min": np.where(real_NxT, logprob_NxT, np.inf).min(1),
      "prompt_tokens": last_N + 1}


def combined_features(f: dict) -> np.ndarray:
  return combined.features(np.concatenate([f["calibrated"], f["base"][:, None]], 1),
                           f["logprob_mean"], f["logprob_min"])


def fit_combined(models: Models, calibrate_workdir: str) -> combined.CombinedEstimate:
  """The combined estimate, fit on the calibration split's step-0 MC records only."""
  folder = os.path.join(calibrate_workdir, "mc_calibration")
  paths = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".array_record"))
  records = [r for r in mc_data.read_records(paths) if r["step"] == 0]
  prompts = [r["text"] for r in records]
  return combined.CombinedEstimate.fit(combined_features(question_features(models, prompts)),
                                       np.array([r["target"] for r in records]))

def load_models(config) -> Models:
  """The policy (`policy.load.load_policy`: a train_policy run, or SmolLM2 with the adapters the
  calibration study fine-tuned in calibrate_workdir), the calibration study's two PRMs and its
  learned step verifier when it trained one."""
  policy, policy_cfg, tokenizer, _ = load_policy(config, config.calibrate_workdir)
  command = (f"python -m experiments.calibrate --config={config.calibrate_config} "
             f"--workdir={config.calibrate_workdir}")
  base, prm_cfg, _ = saved.load_prm(config.calibrate_workdir, "base", command=command)
  calibrated, _, levels = saved.load_prm(config.calibrate_workdir, "calibrated", command=command)
  verifier = None
  if os.path.isdir(os.path.join(config.calibrate_workdir, "prm", "step_verifier")):
    verifier, _, _ = saved.load_prm(config.calibrate_workdir, "step_verifier", command=command)
  same = lambda name: all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(base[name]), jax.tree.leaves(calibrated[name]), strict=True))
  return Models(nn.meta.unbox(policy), policy_cfg, base, calibrated, prm_cfg, levels, tokenizer,
                base_in_calibrated=same("backbone") and same("head"), step_verifier=verifier)
