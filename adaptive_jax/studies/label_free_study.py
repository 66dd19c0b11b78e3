"""The label-free loop study (TAO-style): does a policy improve on unlabelled questions alone?

Splits, each its own seed over the configured difficulties: the loop's prompts (fresh ones
each round, stripped to `UnlabelledPrompt`s before any arm sees them), validation questions
(every choice; the reported label-free arm is the one of `label_free.arms.LABEL_FREE` with
the highest validation pass@1 after the last round) and test questions (read after every
round; the headline reads the last).
Each round, every arm starts from its own policy of the round before (`label_free.arms`):
  supervised  fine-tune on the gold solutions of the round's prompts (the labelled reference)
  majority, best_of_n, budget_best_of_n, grpo   (`label_free_rounds`: label-free)
  rule_best_of_n  best-of-N by the exact step checker (`label_free_rounds`: a ceiling)
After each round each arm's policy is evaluated on validation and test: greedy pass@1, pass@1
and pass@K of K samples, overall and per difficulty; distinct answers per question (collapse);
the reward model's Brier score on those samples (its calibration drift as the policy moves);
each with a 90% bootstrap interval over questions; each arm's FLOPs (sampling, scoring,
training) and wall time. The start policy's best-of-n on test (verifier-selected and majority)
is the line a tuned policy at n = 1 is read against. A killed run resumes at the first
unfinished (arm, round); a workdir holding rounds of another config or other models refuses."""

import dataclasses
import hashlib
import json
import os
import time

import jax
import numpy as np
from absl import logging
from flax import serialization

from adaptive_jax import atomic_file, bootstrap
from adaptive_jax.label_free import arms as arms_lib
from adaptive_jax.label_free import gains, update
from adaptive_jax.label_free.prompts import unlabelled
from adaptive_jax.nn.flops import forward_flops_per_token
from adaptive_jax.policy.lora_fine_tune import encode_example
from adaptive_jax.sampler import decode, draws, selection
from adaptive_jax.scaling.pass_at_k import random_order_curve
from adaptive_jax.studies import ias_models
from adaptive_jax.studies import label_free_rounds as rounds_lib
from adaptive_jax.tasks import arithmetic
from adaptive_jax.tasks.answer_tokens import extract_answer_ids
from adaptive_jax.tasks.arithmetic import check_difficulties
from adaptive_jax.tasks.problem import format_completion
from adaptive_jax.typed_config import (
  check_choice,
  check_int,
  check_open_interval,
  from_mapping,
  is_number,
)

ARMS = arms_lib.ALL
REWARDS = ("verifier", "calibrated", "likelihood")


@dataclasses.dataclass(frozen=True)
class LabelFreeConfig:
  """See configs/label_free_small.py."""
  rounds: int = 3
  prompts_per_round: int = 128
  validation_questions: int = 64
  test_questions: int = 128
  loop_seed: int = 30
  validation_seed: int = 31
  test_seed: int = 33
  difficulties: tuple[int, ...] = (2, 3, 4)
  arms: tuple[str, ...] = ARMS
  reward: str = "likelihood"
  temperature: float = 0.7
  max_new_tokens: int = 128
  samples_per_prompt: int = 8
  budget_n_max: int = 16
  min_score: float = 0.0
  steps: int = 16
  batch_size: int = 16
  learning_rates: tuple[float, ...] = (1e-4, 3e-4)  # fine-tuning arms: chosen in round 1
  grpo_learning_rates: tuple[float, ...] = (3e-5, 1e-4)  # on validation, then kept
  grpo_clip: float = 0.2
  grpo_kl: float = 0.04
  lora_rank: int = 0  # 0: full fine-tuning; else LoRA adapters of this rank, every round
  lora_alpha: float = 32.0
  eval_samples: int = 8
  best_of_n_orders: int = 20
  rows: int = 256
  bootstrap_resamples: int = 2000
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "difficulties",
                       check_difficulties("label_free.difficulties", self.difficulties))
    for name in ("rounds", "prompts_per_round", "validation_questions", "test_questions",
                 "max_new_tokens", "steps", "batch_size", "eval_samples", "best_of_n_orders",
                 "rows", "bootstrap_resamples"):
      check_int("label_free", name, getattr(self, name))
    check_int("label_free", "samples_per_prompt", self.samples_per_prompt, minimum=2)
    check_int("label_free", "budget_n_max", self.budget_n_max, minimum=self.samples_per_prompt)
    for name in ("loop_seed", "validation_seed", "test_seed", "seed"):
      check_int("label_free", name, getattr(self, name), minimum=0)
    seeds = [self.loop_seed, self.validation_seed, self.test_seed]
    if len(set(seeds)) != 3:
      raise ValueError(f"label_free.loop_seed, validation_seed and test_seed must differ (each "
                       f"split its own questions), got {seeds}")
    check_open_interval("label_free", "temperature", self.temperature, 0.0)
    for name in ("learning_rates", "grpo_learning_rates"):
      values = getattr(self, name)
      if not isinstance(values, (tuple, list)) or not values or not all(
          is_number(v) and v > 0 for v in values):
        raise ValueError(f"label_free.{name} must be a non-empty tuple of positive numbers, got "
                         f"{values!r}")
      object.__setattr__(self, name, tuple(float(v) for v in values))
    check_open_interval("label_free", "grpo_clip", self.grpo_clip, 0.0, 1.0)
    for name, high in (("grpo_kl", 1e6), ("min_score", 1.0)):
      value = getattr(self, name)
      if not is_number(value) or not 0 <= value <= high:
        raise ValueError(f"label_free.{name} must be a number in [0, {high:g}], got {value!r}")
    check_choice("label_free", "reward", self.reward, REWARDS)
    check_int("label_free", "lora_rank", self.lora_rank, minimum=0)
    if not is_number(self.lora_alpha) or not self.lora_alpha > 0:
      raise ValueError(f"label_free.lora_alpha must be a number > 0, got {self.lora_alpha!r}")
    arms = tuple(self.arms) if isinstance(self.arms, (tuple, list)) else ()
    if not arms or len(set(arms)) != len(arms) or not set(arms) <= set(ARMS):
      raise ValueError(f"label_free.arms must be distinct names from {ARMS}, got {self.arms!r}")
    object.__setattr__(self, "arms", arms)

  def learning_rates_of(self, arm: str) -> tuple[float, ...]:
    return self.grpo_learning_rates if arm == "grpo" else self.learning_rates

  def settings(self, learning_rate: float) -> rounds_lib.UpdateSettings:
    return rounds_lib.UpdateSettings(
        samples_per_prompt=self.samples_per_prompt, budget_n_max=self.budget_n_max,
        min_score=self.min_score, steps=self.steps, batch_size=self.batch_size,
        learning_rate=learning_rate, grpo_clip=self.grpo_clip, grpo_kl=self.grpo_kl,
        temperature=self.temperature, rows=self.rows,
        lora_spec=(update.LoraSpec(self.lora_rank, float(self.lora_alpha)) if self.lora_rank
                   else None))


def _live(models, cfg: LabelFreeConfig, temperature: float, score_fn) -> draws.LiveDraw:
  tok = models.tokenizer
  dec = decode.DecodeConfig(max_new_tokens=cfg.max_new_tokens,
                            policy=decode.SamplingPolicy(temperature=temperature),
                            stop_tokens=(tok.eos_id,), pad_id=tok.pad_id)
  return draws.LiveDraw(models.policy_cfg, dec, score_fn,
                        lambda t: extract_answer_ids(t, tokenizer=tok), group_window=1)


class _Study:
  """The models, live draws and splits of one run (so the round and eval code stays short)."""

  def __init__(self, config, cfg: LabelFreeConfig):
    self.cfg = cfg
    self.models = ias_models.load_models(config)
    self.score_fn = rounds_lib.reward_score_fn(self.models, cfg.reward, cfg.temperature)
    # "likelihood" reads the policy that draws (`data`), the others a calibration study's PRM.
    scorer_params = {"verifier": self.models.step_verifier, "calibrated": self.models.calibrated,
                     "likelihood": None}[cfg.reward]
    self.scorer = {cfg.reward: scorer_params}
    self.sampled = _live(self.models, cfg, cfg.temperature, self.score_fn)
    self.greedy = _live(self.models, cfg, 0.0, ias_models.unscored)
    self.loop = arithmetic.problems(cfg.rounds * cfg.prompts_per_round, cfg.loop_seed,
                                    cfg.difficulties)
    self.splits = {"validation": arithmetic.problems(cfg.validation_questions,
                                                     cfg.validation_seed, cfg.difficulties),
                   "test": arithmetic.problems(cfg.test_questions, cfg.test_seed,
                                               cfg.difficulties)}
    # FLOPs per token at the mean context: prompts, and the gold solutions' mean length as the
    # typical sample's (compute accounting only; nothing of it reaches the loop).
    tok = self.models.tokenizer
    prompt_len = float(np.mean([len(p) for p in ias_models.prompt_ids(self.loop, tok)]))
    length = float(np.mean([len(tok.encode(format_completion(p))) + 1 for p in self.loop]))
    self.policy_flops = forward_flops_per_token(self.models.policy_cfg, prompt_len + length / 2)
    self.prm_flops = forward_flops_per_token(self.models.prm_cfg, (prompt_len + length) / 2)

  def data(self, params, problems, key) -> dict:
    scorer = ({"likelihood": params} if self.cfg.reward == "likelihood" else self.scorer)
    return {"policy": params, "scorer": scorer, "score_cost": 1, "key": key,
            "prompts": ias_models.encode_prompts(problems, self.models.tokenizer)}

  def evaluate(self, params, split: str) -> dict:
    """Per-question arrays of one policy on a labelled split (the same keys for every policy)."""
    problems = self.splits[split]
    key = jax.random.fold_in(jax.random.key(self.cfg.seed), 1 + (split == "test"))
    q, k = len(problems), self.cfg.eval_samples
    greedy = draws.draw_pairs(self.greedy, self.data(params, problems, key), np.arange(q),
                              np.zeros(q, np.int32), rows=self.cfg.rows)
    sampled = rounds_lib.draw(self.sampled, self.data(params, problems, key), np.full(q, k), k,
                              rows=self.cfg.rows)
    gold_Q = np.array([p.answer for p in problems])
    return {"greedy_Q": greedy["answers_B"] == gold_Q,
            "correct_QxK": sampled.answers_QxN == gold_Q[:, None],
            "answers_QxK": sampled.answers_QxN, "reward_QxK": sampled.reward_QxN,
            "difficulty_Q": np.array([p.difficulty for p in problems]), "gold_Q": gold_Q}

  def summarize(self, ev: dict) -> dict:
    """Each measure's mean over questions with its 90% bootstrap interval, overall and per
    difficulty (resampling that difficulty's questions), and the per-question values the
    headline's paired intervals and a later recomputation read."""
    cfg = self.cfg
    correct_QxK = ev["correct_QxK"]
    per_q = {"greedy_pass@1": ev["greedy_Q"].astype(float),
             "pass@1": correct_QxK.mean(1),
             f"pass@{cfg.eval_samples}": correct_QxK.any(1).astype(float),
             "distinct_answers": _distinct(ev["answers_QxK"]),
             # The reward model's calibration on the moving policy's samples.
             "reward_brier": ((ev["reward_QxK"] - correct_QxK) ** 2).mean(1)}

    def with_intervals(keep_Q, names):
      counts_RxQ = bootstrap.resample_counts(int(keep_Q.sum()), resamples=cfg.bootstrap_resamples,
                                             seed=cfg.seed)
      return {name: {"value": float(per_q[name][keep_Q].mean()),
                     "interval": bootstrap.percentile_interval(
                         counts_RxQ @ per_q[name][keep_Q] / keep_Q.sum(), 0.9)}
              for name in names}

    difficulty_Q = ev["difficulty_Q"]
    out = with_intervals(np.ones(len(difficulty_Q), bool), per_q)
    accuracy = ("greedy_pass@1", "pass@1", f"pass@{cfg.eval_samples}")
    out["by_difficulty"] = {str(d): with_intervals(difficulty_Q == d, accuracy)
                            for d in np.unique(difficulty_Q)}
    out["per_question"] = {**{name: per_q[name].tolist() for name in accuracy},
                           "difficulty": difficulty_Q.tolist()}
    return out

  def best_of_n(self, ev: dict) -> dict:
    """The start policy's accuracy with n samples, verifier-selected and by majority."""
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= self.cfg.eval_samples]
    answers, reward = ev["answers_QxK"], ev["reward_QxK"]
    gold_Q, rows = ev["gold_Q"], np.arange(len(answers))[:, None]
    pick = {"verifier": lambda s: selection.best_score(answers[rows, s], reward[rows, s],
                                                       np.ones(s.shape, bool)),
            "majority": lambda s: selection.majority_vote(answers[rows, s],
                                                          np.ones(s.shape, bool))}
    return {"ks": ks, **{name: random_order_curve(fn, gold_Q, self.cfg.eval_samples, ks,
                                                  orders=self.cfg.best_of_n_orders,
                                                  seed=self.cfg.seed).mean(1).tolist()
                         for name, fn in pick.items()}}


def _distinct(answers_QxK) -> np.ndarray:
  return np.array([len(set(a[a != selection.NO_ANSWER].tolist())) for a in answers_QxK], float)


def _supervised_update(study: _Study, params, problems, key, learning_rate: float):
  """(params, log, forward tokens) of fine-tuning on the gold solutions of `problems`."""
  examples = [encode_example(study.models.tokenizer, p) for p in problems]
  tokens_NxT, mask_NxT = update.example_rows([ids[:n] for ids, n in examples],
                                             [ids[n:] for ids, n in examples],
                                             study.models.tokenizer.pad_id)
  settings = study.cfg.settings(learning_rate)
  params, losses = update.fine_tune(params, study.models.policy_cfg, tokens_NxT, mask_NxT,
                                    steps=settings.steps, batch_size=settings.batch_size,
                                    learning_rate=learning_rate, key=key,
                                    lora_spec=settings.lora_spec)
  return (params, {"loss": losses, "rows": len(problems)},
          rounds_lib.train_forward_tokens(settings, tokens_NxT.shape[1]))


def _arm_round(study: _Study, arm: str, r: int, params, learning_rate: float | None):
  """(params, record) of round r: draw once, update with each learning rate tried (round 1,
  `learning_rate` None: the arm's rates, the one of highest validation pass@1 kept, ties to
  the first; later rounds the record's), evaluate on validation, then the kept one on test.
  Every arm's round r draws and updates from the same keys (common random numbers)."""
  cfg = study.cfg
  tick = time.time()
  problems = study.loop[r * cfg.prompts_per_round:(r + 1) * cfg.prompts_per_round]
  update_key = jax.random.fold_in(jax.random.key(cfg.seed), 1000 + r)
  record = {"round": r + 1}
  if arm != arms_lib.SUPERVISED:
    prompts = unlabelled(problems)  # the label-free arm never sees more than this
    draw_key = jax.random.fold_in(jax.random.key(cfg.seed), 100 + r)
    drawn = rounds_lib.draw_round(arm, params, study.models, prompts, study.sampled,
                                  study.data(params, prompts, draw_key),
                                  cfg.settings(learning_rate=0.0))  # the draw reads no rate
    prompt_len_Q = np.array([len(p) for p in ias_models.prompt_ids(prompts,
                                                                   study.models.tokenizer)])
    cand = drawn.candidates
    record["samples_drawn"] = int(cand.drawn_Q.sum())
    sampling_flops = rounds_lib.sample_flops(cand, prompt_len_Q, study.policy_flops,
                                             study.prm_flops)
    if drawn.estimate_Q is not None:  # the allocator read the calibrated PRM on each prompt
      sampling_flops += float(prompt_len_Q.sum()) * forward_flops_per_token(
          study.models.prm_cfg, float(prompt_len_Q.mean()) / 2)
    record["flops"] = {"sampling": sampling_flops}
  else:
    record["flops"] = {"sampling": 0.0}
  record["seconds_sampling"] = time.time() - tick
  rates = cfg.learning_rates_of(arm) if learning_rate is None else (learning_rate,)
  tried = []
  for rate in rates:
    if arm == arms_lib.SUPERVISED:
      new, log, forward_tokens = _supervised_update(study, params, problems, update_key, rate)
      chosen_Q = None
    else:
      out = rounds_lib.update_round(arm, params, study.models.policy, study.models, prompts,
                                    drawn, cfg.settings(rate), update_key)
      new, log, forward_tokens, chosen_Q = out.params, out.log, out.forward_tokens, out.chosen_Q
    val = study.summarize(study.evaluate(new, "validation"))
    tried.append((val[gains.METRIC]["value"], new, rate, log, forward_tokens, chosen_Q, val))
  best = max(range(len(tried)), key=lambda i: (tried[i][0], -i))
  _, params, rate, log, forward_tokens, chosen_Q, val = tried[best]
  record.update({"learning_rate": rate, "train_rows": int(log["rows"]),
                 "final_loss": float(np.mean(log["loss"][-4:])) if log.get("loss") else None,
                 "validation": val})
  record["flops"]["training"] = forward_tokens * study.policy_flops
  if len(rates) > 1:
    record["learning_rate_choice"] = {f"{t[2]:g}": t[0] for t in tried}
  if arm != arms_lib.SUPERVISED:
    # Read afterwards, with the labels the arm never saw: how often its training data is right.
    record["pseudo_labels"] = _pseudo_label_quality(drawn, chosen_Q, problems)
  record["test"] = study.summarize(study.evaluate(params, "test"))
  record["seconds"] = time.time() - tick
  return params, record


def _pseudo_label_quality(drawn: rounds_lib.Drawn, chosen_Q, problems) -> dict:
  cand = drawn.candidates
  gold_Q = np.array([p.answer for p in problems])
  correct_QxN = cand.answers_QxN == gold_Q[:, None]
  drawn_QxN = np.arange(cand.answers_QxN.shape[1])[None, :] < cand.drawn_Q[:, None]
  quality = {"sample_accuracy": float(correct_QxN[drawn_QxN].mean()),
             "prompts_with_a_correct_sample": float((correct_QxN & drawn_QxN).any(1).mean())}
  chosen_K = np.flatnonzero(chosen_Q >= 0)
  if len(chosen_K):
    quality["chosen_accuracy"] = float(correct_QxN[chosen_K, chosen_Q[chosen_K]].mean())
    quality["chosen_share"] = len(chosen_K) / len(gold_Q)
  if drawn.estimate_Q is not None:
    difficulty_Q = np.array([p.difficulty for p in problems])
    quality["samples_by_difficulty"] = {str(d): float(cand.drawn_Q[difficulty_Q == d].mean())
                                        for d in np.unique(difficulty_Q)}
  return quality


def _settings_digest(study: _Study) -> dict:
  """What a workdir's rounds were made with: the config and a digest of the policy's and the
  reward model's params. A resumed run with other settings would mix two experiments."""
  models = hashlib.sha256()
  for x in jax.tree.leaves((study.models.policy, study.scorer, study.models.calibrated)):
    models.update(np.ascontiguousarray(np.asarray(x)).tobytes())
  return {"label_free": json.loads(json.dumps(dataclasses.asdict(study.cfg))),
          "models": models.hexdigest()}


def _check_resumable(study: _Study, folder: str) -> None:
  path = os.path.join(folder, "settings.json")
  settings = _settings_digest(study)
  if os.path.exists(path):
    with open(path) as f:
      before = json.load(f)
    if before != settings:
      changed = sorted(k for k in set(before["label_free"]) | set(settings["label_free"])
                       if before["label_free"].get(k) != settings["label_free"].get(k))
      what = (f"label_free.{', label_free.'.join(changed)}" if changed
              else "the policy or the reward model's params")
      raise ValueError(f"{folder} holds rounds of another run ({what} changed): use a new "
                       f"workdir or delete {folder}")
  else:
    atomic_file.write_json(path, settings)


def run_label_free_study(config, workdir: str) -> dict:
  """Runs (or resumes) every arm's rounds and writes results.json (see the module doc)."""
  cfg = from_mapping(LabelFreeConfig, config.label_free, "label_free")
  study = _Study(config, cfg)
  os.makedirs(os.path.join(workdir, "rounds"), exist_ok=True)
  _check_resumable(study, os.path.join(workdir, "rounds"))
  start_path = os.path.join(workdir, "rounds", "start.json")
  if os.path.exists(start_path):
    with open(start_path) as f:
      start = json.load(f)
  else:
    test = study.evaluate(study.models.policy, "test")
    start = {"validation": study.summarize(study.evaluate(study.models.policy, "validation")),
             "test": study.summarize(test), "best_of_n": study.best_of_n(test)}
    atomic_file.write_json(start_path, start)
  arms = {}
  for arm in cfg.arms:
    params, records, rate = study.models.policy, [], None
    for r in range(cfg.rounds):
      path = os.path.join(workdir, "rounds", f"{arm}_{r + 1}")
      if os.path.exists(path + ".json") and os.path.exists(path + ".msgpack"):
        with open(path + ".json") as f:
          record = json.load(f)
        with open(path + ".msgpack", "rb") as f:
          params = serialization.from_bytes(params, f.read())
      else:
        logging.info("label-free: arm %s, round %d of %d", arm, r + 1, cfg.rounds)
        params, record = _arm_round(study, arm, r, params, rate)
        atomic_file.write_bytes(path + ".msgpack",
                                lambda f, p=params: f.write(serialization.to_bytes(p)))
        atomic_file.write_json(path + ".json", record)
      records.append(record)
      rate = record["learning_rate"]
    arms[arm] = records
  results = {"config": dataclasses.asdict(cfg), "start": start, "arms": arms,
             "flops_per_token": {"policy": study.policy_flops, "verifier": study.prm_flops}}
  results["headline"] = gains.headline(results)
  atomic_file.write_json(os.path.join(workdir, "results.json"), results)
  return results
