"""Instance-adaptive sampling study: every best-of-N method through the on-device adaptive loop.

Per split (validation, test): each question's first n_max samples are drawn once by the live
sampler (`sampler.draws`) and replayed from that pool by every method, which gives exactly
what drawing them live would (tests/test_adaptive.py). Methods: fixed N (a sweep), IAS with
N(p) from the base PRM, the calibrated PRM (its 0.1 quantile as the paper, and its mean), the
combined estimate (`combined.py`) and, as an oracle that reads the outcomes, each difficulty's
true success rate; Adaptive-Consistency; DeepConf-online (low and high). The aggregation used
by the PRM methods is chosen on the validation split; the test split is read once, at the end.
Compute: policy tokens generated and PRM tokens read, each times its forward FLOPs per token.
"""

import dataclasses
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.flops import forward_flops_per_token
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.prm import beam_study, combined, ias, mc_data, saved, scoring, study
from adaptive_jax.prm import probe as probe_lib
from adaptive_jax.prm.model import encode_texts
from adaptive_jax.sampler import adaptive, confidence, decode, draws, selection
from adaptive_jax.sampler.adaptive import LoopConfig, StopRule
from adaptive_jax.tasks.answer_tokens import extract_answer_ids, step_end_ids
from adaptive_jax.tasks.arithmetic import (MAX_DIFFICULTY, MIN_DIFFICULTY, ArithmeticSource,
                                           check_difficulties)
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from adaptive_jax.tasks.problem import format_prompt
from adaptive_jax.typed_config import check_int, check_open_interval, from_mapping

TOKENIZER = ByteTokenizer()
# Score channels of every sample: the calibrated PRM's mean at the last step and its minimum
# over steps, then the same two of the base PRM.
CHANNELS = ("calibrated_last", "calibrated_min", "base_last", "base_min")
# How a fixed set of samples becomes one answer: (selection, channel or None).
AGGREGATIONS = {
    "majority": ("majority", None),
    "calibrated_vote": ("vote", 0), "calibrated_last": ("best", 0),
    "calibrated_min": ("best", 1),
    "base_vote": ("vote", 2), "base_last": ("best", 2), "base_min": ("best", 3),
}


@dataclasses.dataclass(frozen=True)
class IasConfig:
  """See configs/ias_small.py."""
  validation_questions: int = 64
  test_questions: int = 128
  validation_seed: int = 20
  test_seed: int = 21
  n_max: int = 32
  fixed_ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
  q: float = 0.99
  per_round: int = 4
  rows: int = 256
  pool_rows: int = 256
  temperature: float = 0.7
  max_new_tokens: int = 224
  confidence_top_k: int = 20
  group_window: int = 16
  deepconf_warmup: int = 4
  deepconf_tau: float = 0.95
  consistency_threshold: float = 0.95
  bootstrap_resamples: int = 2000
  seed: int = 0
  difficulties: tuple[int, ...] = tuple(range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1))

  def __post_init__(self):
    object.__setattr__(self, "difficulties",
                       check_difficulties("ias.difficulties", self.difficulties))
    for name in ("validation_questions", "test_questions", "n_max", "per_round", "rows",
                 "pool_rows", "max_new_tokens", "confidence_top_k", "group_window",
                 "deepconf_warmup", "bootstrap_resamples"):
      check_int("ias", name, getattr(self, name))
    for name in ("validation_seed", "test_seed", "seed"):
      check_int("ias", name, getattr(self, name), minimum=0)
    if self.validation_seed == self.test_seed:
      raise ValueError("ias.validation_seed and ias.test_seed must differ")
    for name in ("q", "deepconf_tau", "consistency_threshold"):
      check_open_interval("ias", name, getattr(self, name), 0.0, 1.0)
    check_open_interval("ias", "temperature", self.temperature, 0.0)
    if not self.fixed_ns or any(isinstance(n, bool) or not isinstance(n, int) or
                                not 1 <= n <= self.n_max for n in self.fixed_ns):
      raise ValueError(f"ias.fixed_ns must be integers in [1, n_max={self.n_max}], got "
                       f"{self.fixed_ns}")
    if self.deepconf_warmup > self.n_max:
      raise ValueError(f"ias.deepconf_warmup must be <= n_max={self.n_max}, got "
                       f"{self.deepconf_warmup}")


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

  @property
  def step_end_ids(self) -> tuple[int, ...]:
    return step_end_ids(self.tokenizer)


def _score_fn(prm_cfg: ModelConfig, levels, step_end_ids_S: tuple[int, ...],
              base_in_calibrated: bool = False):
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
    return jnp.stack([selection.sample_scores(cal_BxT, step_BxT, "last"),
                      selection.sample_scores(cal_BxT, step_BxT, "min"),
                      selection.sample_scores(base_BxT, step_BxT, "last"),
                      selection.sample_scores(base_BxT, step_BxT, "min")], -1)
  return score


def live_draw(models: Models, cfg: IasConfig) -> draws.LiveDraw:
  tokenizer = models.tokenizer
  dec = decode.DecodeConfig(max_new_tokens=cfg.max_new_tokens,
                            policy=decode.SamplingPolicy(temperature=cfg.temperature),
                            stop_tokens=(tokenizer.eos_id,), pad_id=tokenizer.pad_id,
                            confidence_top_k=cfg.confidence_top_k)
  return draws.LiveDraw(models.policy_cfg, dec,
                        _score_fn(models.prm_cfg, models.levels, models.step_end_ids,
                                  models.base_in_calibrated),
                        functools.partial(extract_answer_ids, tokenizer=tokenizer),
                        group_window=cfg.group_window)


def prompt_ids(problems, tokenizer=TOKENIZER) -> list[list[int]]:
  """Each problem's prompt as the policy reads it: EOS, then the question."""
  return [[tokenizer.eos_id] + tokenizer.encode(format_prompt(p)) for p in problems]


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
  logits_NxTxV = jax.jit(lambda p, t: Transformer(models.policy_cfg).apply({"params": p}, t))(
      models.policy, tokens_NxT)
  logprob_NxT = np.asarray(jnp.take_along_axis(jax.nn.log_softmax(logits_NxTxV[:, :-1]),
                                               tokens_NxT[:, 1:, None], -1)[..., 0])
  real_NxT = np.arange(1, tokens_NxT.shape[1])[None, :] <= last_N[:, None]
  cols = scoring.columns(models.levels)
  return {
      "calibrated": cal[:, :cols[scoring.BASE]], "base": base,
      "logprob_mean": np.where(real_NxT, logprob_NxT, 0).sum(1) / real_NxT.sum(1),
      "logprob_min": np.where(real_NxT, logprob_NxT, np.inf).min(1),
      "prompt_tokens": last_N + 1}


def _combined_features(f: dict) -> np.ndarray:
  return combined.features(np.concatenate([f["calibrated"], f["base"][:, None]], 1),
                           f["logprob_mean"], f["logprob_min"])


def fit_combined(models: Models, calibrate_workdir: str) -> combined.CombinedEstimate:
  """The combined estimate, fit on the calibration split's step-0 MC records only."""
  folder = os.path.join(calibrate_workdir, "mc_calibration")
  paths = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".array_record"))
  records = [r for r in mc_data.read_records(paths) if r["step"] == 0]
  prompts = [r["text"] for r in records]
  return combined.CombinedEstimate.fit(_combined_features(question_features(models, prompts)),
                                       np.array([r["target"] for r in records]))


def _answers(state, aggregation: str) -> np.ndarray:
  how, channel = AGGREGATIONS[aggregation]
  kept = state.kept()
  if how == "majority":
    return selection.majority_vote(state.answers_QxN, kept)
  scores = state.scores_QxNxC[..., channel]
  if how == "vote":
    return selection.weighted_vote(state.answers_QxN, scores, kept)
  return selection.best_score(state.answers_QxN, scores, kept)


def _interval(correct_Q, resamples: int, seed: int) -> list:
  rng = np.random.default_rng(seed)
  means = correct_Q[rng.integers(0, len(correct_Q), (resamples, len(correct_Q)))].mean(1)
  return [float(np.quantile(means, 0.05)), float(np.quantile(means, 0.95))]


class Split:
  """One split's questions, pool and per-token FLOPs."""

  def __init__(self, name, models: Models, cfg: IasConfig, size: int, seed: int,
               prior: combined.CombinedEstimate):
    self.name = name
    source = ArithmeticSource(size=size, seed=seed, difficulties=cfg.difficulties)
    problems = [source[i] for i in range(size)]
    self.problems = problems
    self.difficulty_Q = np.array([p.difficulty for p in problems])
    self.gold_Q = np.array([p.answer for p in problems])
    prompts = encode_prompts(problems, models.tokenizer)
    self.features = question_features(models, [format_prompt(p) for p in problems])
    self.prior_Q = prior(_combined_features(self.features))  # the combined estimate
    live = live_draw(models, cfg)
    data = {"policy": models.policy, "prompts": prompts, "score_cost": 1,
            "key": jax.random.fold_in(jax.random.key(cfg.seed), seed),
            "scorer": {"base": models.base, "calibrated": models.calibrated}}
    logging.info("%s: drawing %d x %d samples", name, size, cfg.n_max)
    self.pool = draws.build_pool(live, data, size, cfg.n_max, rows=cfg.pool_rows)
    self.correct_QxN = self.pool.answers_QxN == self.gold_Q[:, None]
    prompt_len = float(np.mean(self.features["prompt_tokens"]))
    length = float(np.mean(self.pool.lengths_QxN))
    # Mean keys attended: a generated token sees the prompt and half the solution on
    # average; the PRM reads prompt + solution once, causally.
    self.policy_flops = forward_flops_per_token(models.policy_cfg, prompt_len + length / 2)
    self.prm_flops = forward_flops_per_token(models.prm_cfg, (prompt_len + length) / 2)
    self.prompt_tokens_Q = self.features["prompt_tokens"]

  def success_rate(self) -> np.ndarray:
    return self.correct_QxN.mean(1)


def _run(split: Split, cfg: IasConfig, target_Q, rule: StopRule, probe=None):
  loop = LoopConfig(n_max=cfg.n_max, per_round=cfg.per_round, rows=cfg.rows,
                    num_channels=len(CHANNELS))
  replay = draws.PoolDraw(confidence_window=cfg.group_window, group_window=cfg.group_window)
  data = {"pool": split.pool, "score_cost": 1, "prior_Q": jnp.asarray(split.prior_Q, jnp.float32)}
  return adaptive.run(replay, data, np.asarray(target_Q, np.int32), rule=rule, loop=loop,
                      probe=probe)


def pool_probe_features(split: Split, cfg: IasConfig) -> np.ndarray:
  """features_QxNxF (`probe.features`) of every pool sample, as the loop's replay sees them."""
  pool = split.pool
  q, n, m = pool.confidence_QxNxM.shape
  lowest_QxN = np.asarray(confidence.lowest_group_confidence(
      pool.confidence_QxNxM.reshape(q * n, m), pool.lengths_QxN.reshape(-1),
      cfg.group_window)).reshape(q, n)
  prior_QxN = np.broadcast_to(split.prior_Q[:, None], (q, n))
  return probe_lib.features(lowest_QxN, np.asarray(pool.scores_QxNxC[..., 0]), prior_QxN)


def fit_probes(split: Split, cfg: IasConfig) -> dict:
  """The probe estimates, fit on every sample of `split`'s pool (the validation split)."""
  x_QxNxF = pool_probe_features(split, cfg)
  target_QxN = probe_lib.leave_one_out_rate(split.correct_QxN)
  return {kind: probe_lib.ProbeEstimate.fit(kind, x_QxNxF.reshape(-1, x_QxNxF.shape[-1]),
                                            target_QxN.reshape(-1))
          for kind in probe_lib.KINDS}


def _summary(split: Split, cfg: IasConfig, state, answer_Q, *, pays_prm: bool,
             prm_prompt: bool, scored_Q: np.ndarray | None = None) -> dict:
  """Accuracy and compute per question; the PRM's tokens count where the method reads the
  PRM: its samples' scores (`pays_prm`: all of them, or `scored_Q` tokens per question) and
  the empty prefix's (`prm_prompt`, IAS)."""
  correct_Q = (np.asarray(answer_Q) == split.gold_Q).astype(np.float64)
  drawn_Q = np.asarray(state.drawn_Q)
  tokens_Q = np.asarray(state.tokens_Q)
  if scored_Q is None:
    scored_Q = np.asarray(state.scored_tokens_Q) * pays_prm
  prompt_Q = split.prompt_tokens_Q
  flops_Q = ((tokens_Q + prompt_Q) * split.policy_flops
             + (scored_Q + prm_prompt * prompt_Q) * split.prm_flops)
  by = lambda x: {str(d): float(np.mean(x[split.difficulty_Q == d]))
                  for d in np.unique(split.difficulty_Q)}
  # Coverage (pass@k over the samples drawn): the accuracy of a perfect selector, an oracle
  # that reads the gold answer. It measures the allocation apart from the selection.
  covered_Q = ((np.asarray(state.answers_QxN) == split.gold_Q[:, None])
               & np.asarray(state.kept())).any(1)
  return {"accuracy": float(correct_Q.mean()),
          "accuracy_interval": _interval(correct_Q, cfg.bootstrap_resamples, cfg.seed),
          "coverage": float(covered_Q.mean()),
          "samples": float(drawn_Q.mean()), "policy_tokens": float(tokens_Q.mean()),
          "prm_tokens": float((scored_Q + prm_prompt * prompt_Q).mean()),
          "flops": float(flops_Q.mean()), "accuracy_by_difficulty": by(correct_Q),
          "samples_by_difficulty": by(drawn_Q.astype(np.float64))}


def matched_ratio(fixed_curve: list, accuracy: float, flops: float) -> dict:
  """adaptive FLOPs / the fixed method's FLOPs at the same accuracy, on the monotone envelope
  of its (FLOPs, accuracy) sweep, linear between points. Above the whole curve: "not
  reached", with the accuracy gain over the curve at the adaptive FLOPs."""
  points = sorted(fixed_curve)
  flops_K = np.array([f for f, _ in points])
  envelope_K = np.maximum.accumulate(np.array([a for _, a in points]))
  if accuracy > envelope_K[-1]:
    at_equal = float(np.interp(flops, flops_K, envelope_K))
    return {"ratio": None, "not_reached": True, "accuracy_gain_at_equal_flops": accuracy - at_equal}
  if accuracy <= envelope_K[0]:
    matched = flops_K[0]
  else:
    k = int(np.argmax(envelope_K >= accuracy))
    lo, hi = envelope_K[k - 1], envelope_K[k]
    matched = flops_K[k - 1] + (flops_K[k] - flops_K[k - 1]) * (accuracy - lo) / (hi - lo)
  return {"ratio": float(flops / matched), "not_reached": False}


def choose_aggregation(mean_accuracy: dict) -> str:
  """The aggregation with the best mean accuracy over the fixed sweep; ties go to majority."""
  return max(AGGREGATIONS, key=lambda name: (mean_accuracy[name], name == "majority"))


def evaluate_split(split: Split, cfg: IasConfig, estimates: dict, probes: dict,
                   aggregation: str) -> dict:
  """Every method on one split; `estimates`: name -> p_Q for IAS; `probes`: kind ->
  ProbeEstimate for probe IAS; `aggregation` for the PRM methods' picks."""
  uses_prm = AGGREGATIONS[aggregation][1] is not None
  methods, fixed = {}, {}
  for n in cfg.fixed_ns:
    state = _run(split, cfg, np.full(len(split.gold_Q), n), StopRule())
    fixed[n] = {name: _summary(split, cfg, state, _answers(state, name),
                               pays_prm=AGGREGATIONS[name][1] is not None, prm_prompt=False)
                for name in AGGREGATIONS}
  for name, p_Q in estimates.items():
    target_Q = np.asarray(ias.num_samples(p_Q, n_max=cfg.n_max, q=cfg.q))
    state = _run(split, cfg, target_Q, StopRule())
    methods[f"ias_{name}"] = _summary(split, cfg, state, _answers(state, aggregation),
                                      pays_prm=uses_prm, prm_prompt=not name.startswith("oracle"))
  # Without a PRM aggregation, the PRM's tokens on each question's first sample (replays draw
  # samples in pool order): what the combined probe reads.
  first_scored_Q = None if uses_prm else np.asarray(
      _run(split, cfg, np.ones(len(split.gold_Q), np.int32), StopRule()).scored_tokens_Q)
  for kind, estimate in probes.items():
    fn = probe_lib.target_fn(estimate, channel=0, n_max=cfg.n_max, q=cfg.q)
    state = _run(split, cfg, np.full(len(split.gold_Q), cfg.n_max), StopRule(),
                 probe=adaptive.Probe(1, fn))
    # The combined probe reads the PRM on its first sample and at the empty prefix (its
    # prior); an aggregation that reads the PRM pays for every sample instead.
    scored_Q = first_scored_Q if kind == "combined" else None
    methods[f"probe_{kind}"] = _summary(split, cfg, state, _answers(state, aggregation),
                                        pays_prm=uses_prm, prm_prompt=kind == "combined",
                                        scored_Q=scored_Q)
  state = _run(split, cfg, np.full(len(split.gold_Q), cfg.n_max),
               StopRule("adaptive_consistency", threshold=cfg.consistency_threshold))
  methods["adaptive_consistency"] = _summary(split, cfg, state, _answers(state, "majority"),
                                             pays_prm=False, prm_prompt=False)
  for variant, keep in (("low", 10.0), ("high", 90.0)):
    rule = StopRule("deepconf", threshold=cfg.deepconf_tau, warmup=cfg.deepconf_warmup,
                    keep_percent=keep)
    state = _run(split, cfg, np.full(len(split.gold_Q), cfg.n_max), rule)
    answer_Q = selection.weighted_vote(state.answers_QxN, state.confidence_QxN, state.kept())
    methods[f"deepconf_{variant}"] = _summary(split, cfg, state, answer_Q, pays_prm=False,
                                              prm_prompt=False)
  curves = {name: [(fixed[n][name]["flops"], fixed[n][name]["accuracy"]) for n in cfg.fixed_ns]
            for name in AGGREGATIONS}
  coverage_curve = [(n, fixed[n]["majority"]["coverage"]) for n in cfg.fixed_ns]
  for name, m in methods.items():
    reference = aggregation if name.startswith(("ias_", "probe_")) else "majority"
    m["matched_to"] = f"fixed_{reference}"
    m["matched"] = matched_ratio(curves[reference], m["accuracy"], m["flops"])
    # Samples / fixed N's samples at the same coverage: the allocation alone.
    m["matched_coverage"] = matched_ratio(coverage_curve, m["coverage"], m["samples"])
  return {"fixed": {str(n): v for n, v in fixed.items()}, "methods": methods}


def evaluate_beams(split: Split, models: Models, cfg: IasConfig,
                   beam_cfg: beam_study.BeamStudyConfig) -> dict:
  """Fixed beam searches and IAS-of-K / IAS-of-M on the split's first questions."""
  n = min(beam_cfg.questions, len(split.problems))
  problems = split.problems[:n]
  runs = beam_study.run_beams(models, problems, prompt_ids(problems, models.tokenizer), beam_cfg,
                              temperature=cfg.temperature, q=cfg.q,
                              key=jax.random.fold_in(jax.random.key(cfg.seed), 7))
  difficulty_Q, prompt_Q = split.difficulty_Q[:n], split.prompt_tokens_Q[:n]
  by = lambda x: {str(d): float(np.mean(x[difficulty_Q == d])) for d in np.unique(difficulty_Q)}
  out = {}
  for name, (correct_Q, tokens_Q, prm_Q, generations_Q) in runs.items():
    flops_Q = (tokens_Q + prompt_Q) * split.policy_flops + prm_Q * split.prm_flops
    out[name] = {"accuracy": float(correct_Q.mean()),
                 "accuracy_interval": _interval(correct_Q, cfg.bootstrap_resamples, cfg.seed),
                 "samples": float(generations_Q.mean()), "policy_tokens": float(tokens_Q.mean()),
                 "prm_tokens": float(prm_Q.mean()), "flops": float(flops_Q.mean()),
                 "accuracy_by_difficulty": by(correct_Q),
                 "samples_by_difficulty": by(generations_Q.astype(float))}
  curve = [(m["flops"], m["accuracy"]) for name, m in out.items() if name.startswith("fixed")]
  for name in ("ias_of_k", "ias_of_m"):
    out[name]["matched_to"] = "fixed beam search"
    out[name]["matched"] = matched_ratio(curve, out[name]["accuracy"], out[name]["flops"])
  return {"questions": n, "variants": out}


def load_models(config) -> Models:
  """The policy (`study.load_policy`: a train_policy run, or SmolLM2 with the adapters the
  calibration study fine-tuned in calibrate_workdir) and the calibration study's two PRMs."""
  policy, policy_cfg, tokenizer, _ = study.load_policy(config, config.calibrate_workdir)
  command = (f"python -m experiments.calibrate --config={config.calibrate_config} "
             f"--workdir={config.calibrate_workdir}")
  base, prm_cfg, _ = saved.load_prm(config.calibrate_workdir, "base", command=command)
  calibrated, _, levels = saved.load_prm(config.calibrate_workdir, "calibrated", command=command)
  same = lambda name: all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(base[name]), jax.tree.leaves(calibrated[name]), strict=True))
  return Models(nn.meta.unbox(policy), policy_cfg, base, calibrated, prm_cfg, levels, tokenizer,
                base_in_calibrated=same("backbone") and same("head"))


def estimates_for(split: Split, models: Models, rate_by_difficulty: dict) -> dict:
  cols = scoring.columns(models.levels)
  f = split.features
  return {"base": f["base"], "calibrated_q0.1": f["calibrated"][:, cols["q0.1"]],
          "calibrated_mean": f["calibrated"][:, cols["mean"]],
          "combined": split.prior_Q,
          "oracle_difficulty_rate": np.array([rate_by_difficulty[d] for d in split.difficulty_Q])}


def run_ias_study(config, workdir: str) -> dict:
  cfg = from_mapping(IasConfig, config.ias, "ias")
  models = load_models(config)
  os.makedirs(workdir, exist_ok=True)
  estimate = fit_combined(models, config.calibrate_workdir)
  val = Split("validation", models, cfg, cfg.validation_questions, cfg.validation_seed, estimate)
  probes = fit_probes(val, cfg)
  rate = {int(d): float(val.success_rate()[val.difficulty_Q == d].mean())
          for d in np.unique(val.difficulty_Q)}
  # Choice on validation: the aggregation with the best mean accuracy over the fixed sweep.
  val_results = evaluate_split(val, cfg, estimates_for(val, models, rate), probes,
                               "majority")
  mean_acc = {name: np.mean([val_results["fixed"][str(n)][name]["accuracy"]
                             for n in cfg.fixed_ns]) for name in AGGREGATIONS}
  aggregation = choose_aggregation(mean_acc)
  logging.info("aggregation chosen on validation: %s (%s)", aggregation, mean_acc)
  test = Split("test", models, cfg, cfg.test_questions, cfg.test_seed, estimate)
  test_estimates = estimates_for(test, models, rate)
  beam_cfg = from_mapping(beam_study.BeamStudyConfig, config.beam, "beam")
  logging.info("beam search on %d test questions", beam_cfg.questions)
  first_QxF = pool_probe_features(test, cfg)[:, 0]  # each test question's first sample
  results = {
      "beam": evaluate_beams(test, models, cfg, beam_cfg),
      "aggregation": aggregation,
      "validation_mean_accuracy": {k: float(v) for k, v in mean_acc.items()},
      "test": evaluate_split(test, cfg, test_estimates, probes, aggregation),
      "validation": val_results,
      # How well each estimate predicts a test question's success rate (its n_max samples).
      "estimate_brier": {name: float(np.mean((p - test.success_rate()) ** 2))
                         for name, p in test_estimates.items()},
      # The same for the probes, from each test question's first sample.
      "probe_brier": {f"probe_{kind}": float(np.mean((est(first_QxF) - test.success_rate()) ** 2))
                      for kind, est in probes.items()},
      "probe_weights": {kind: est.weights() for kind, est in probes.items()},
      "success_rate_by_difficulty": {
          str(d): float(test.success_rate()[test.difficulty_Q == d].mean())
          for d in np.unique(test.difficulty_Q)},
      "flops_per_token": {"policy": test.policy_flops, "prm": test.prm_flops},
      "num_questions": {"validation": cfg.validation_questions, "test": cfg.test_questions},
  }
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  np.savez(os.path.join(workdir, "test_pool.npz"), difficulty=test.difficulty_Q,
           correct=test.correct_QxN, lengths=test.pool.lengths_QxN,
           **{f"estimate_{k}": v for k, v in test_estimates.items()})
  return results
