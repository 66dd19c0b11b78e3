"""Instance-adaptive sampling study: a regime chosen on a design split, pools, every method.

1. Regime. A design split (its own seed; difficulties cycling over `design_difficulties`)
   draws `design_samples` (default n_max) per question at each temperature;
   `regime.choose_regime` picks the difficulty mix, temperature and N_max from those fixed-N
   statistics alone, against criteria fixed in the config. Nothing of IAS is looked at.
2. Pools. The regime's validation and test questions, and a control test split on the
   uniform mix of every design difficulty (the declared negative control), each draw n_max
   samples per question once (`draws.build_pool`, saved as they go, resumable), scored by the
   base and calibrated PRMs, the learned step verifier when the calibration study trained
   one, and the rule verifier (`tasks.step_checker`: an exact step checker, the stand-in for
   a perfect PRM). Compact copies (no token confidences) go to `<workdir>/pools/`, from
   which `benchmarks.ias --pools` recomputes the sweeps' ratios.
3. Evaluation (`ias_sweep.evaluate`): fixed-N curves over random orders, IAS swept over the
   confidence q, the cap and the estimate, budget-aware allocation (offline greedy, online in
   the loop) swept over the budget, choices on validation, test read once, paired bootstrap
   intervals. Beside them on test: Adaptive-Consistency, DeepConf-online, probe IAS, beam
   search.
Compute: policy tokens generated and PRM tokens read, each times its forward FLOPs per token.
"""

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from adaptive_jax import atomic_file
from adaptive_jax.allocation import combined
from adaptive_jax.allocation import probe as probe_lib
from adaptive_jax.nn.flops import forward_flops_per_token
from adaptive_jax.prm import scoring
from adaptive_jax.sampler import adaptive, confidence, decode, draws, pool_store, selection
from adaptive_jax.sampler.adaptive import LoopConfig, StopRule
from adaptive_jax.studies import beam_study, ias_eval, ias_models, ias_sweep, regime
from adaptive_jax.tasks import arithmetic, step_checker
from adaptive_jax.tasks.answer_tokens import extract_answer_ids
from adaptive_jax.tasks.arithmetic import (
  MAX_DIFFICULTY,
  MIN_DIFFICULTY,
  check_difficulties,
)
from adaptive_jax.tasks.problem import format_prompt
from adaptive_jax.typed_config import check_int, check_open_interval, from_mapping, is_number

ESTIMATES = ("base", "calibrated_q0.1", "calibrated_mean", "combined")


@dataclasses.dataclass(frozen=True)
class IasConfig:
  """See configs/ias_small.py."""
  design_questions: int = 256
  validation_questions: int = 256
  test_questions: int = 512
  control_questions: int = 512
  design_seed: int = 22
  validation_seed: int = 20
  test_seed: int = 21
  control_seed: int = 23
  design_difficulties: tuple[int, ...] = tuple(range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1))
  temperatures: tuple[float, ...] = (0.7, 1.0)
  n_max: int = 64
  design_samples: int = 0  # per design question and temperature; 0: n_max
  fixed_ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
  orders: int = 100
  qs: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
  ias_n_maxes: tuple[int, ...] = (16, 32, 64)
  ias_estimates: tuple[str, ...] = ("calibrated_q0.1", "calibrated_mean", "combined")
  budgets: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
  online_solved_at: tuple[float, ...] = (0.5, 0.8)
  online_hopeless_below: float = 0.02
  online_prior_strength: float = 2.0
  online_estimate: str = "combined"
  # Map the online allocator's channel to P(correct) on validation (isotonic) before it reads it.
  online_calibrated: bool = True
  # Online: caps on one question's samples, swept beside the budget (as IAS's); (): no cap.
  online_n_maxes: tuple[int, ...] = ()
  q: float = 0.99
  per_round: int = 4
  rows: int = 256
  pool_rows: int = 256
  max_new_tokens: int = 224
  confidence_top_k: int = 20
  group_window: int = 16
  deepconf_warmup: int = 4
  deepconf_tau: float = 0.95
  consistency_threshold: float = 0.95
  bootstrap_resamples: int = 2000
  seed: int = 0

  @property
  def design_pool(self) -> int:
    """Samples per design question and temperature."""
    return self.design_samples or self.n_max

  def __post_init__(self):
    object.__setattr__(self, "design_difficulties",
                       check_difficulties("ias.design_difficulties", self.design_difficulties))
    for name in ("design_questions", "validation_questions", "test_questions", "n_max",
                 "orders", "per_round", "rows", "pool_rows", "max_new_tokens",
                 "confidence_top_k", "group_window", "deepconf_warmup", "bootstrap_resamples"):
      check_int("ias", name, getattr(self, name))
    check_int("ias", "control_questions", self.control_questions, minimum=0)
    check_int("ias", "design_samples", self.design_samples, minimum=0)
    for name in ("design_seed", "validation_seed", "test_seed", "control_seed", "seed"):
      check_int("ias", name, getattr(self, name), minimum=0)
    seeds = [self.design_seed, self.validation_seed, self.test_seed, self.control_seed]
    if len(set(seeds)) != len(seeds):
      raise ValueError(f"ias.design_seed, validation_seed, test_seed and control_seed must all "
                       f"differ (each split its own questions), got {seeds}")
    for name in ("q", "deepconf_tau", "consistency_threshold"):
      check_open_interval("ias", name, getattr(self, name), 0.0, 1.0)
    check_open_interval("ias", "online_prior_strength", self.online_prior_strength, 0.0)
    for name, low, high in (("temperatures", 0.0, float("inf")), ("qs", 0.0, 1.0),
                            ("online_solved_at", 0.0, 1.0)):
      values = getattr(self, name)
      if not isinstance(values, (tuple, list)) or not values or not all(
          is_number(v) and low < v < high for v in values):
        raise ValueError(f"ias.{name} must be a non-empty tuple of numbers in ({low}, {high}), "
                         f"got {values!r}")
      object.__setattr__(self, name, tuple(float(v) for v in values))
    if not isinstance(self.budgets, (tuple, list)) or not self.budgets or not all(
        is_number(b) and b >= 1 for b in self.budgets):
      raise ValueError(f"ias.budgets must be a non-empty tuple of mean samples per question, each "
                       f">= 1 (every question gets its first sample), got {self.budgets!r}")
    object.__setattr__(self, "budgets", tuple(float(b) for b in self.budgets))
    if not is_number(self.online_hopeless_below) or not 0 <= self.online_hopeless_below < 1:
      raise ValueError(f"ias.online_hopeless_below must be in [0, 1) (0: never give up), got "
                       f"{self.online_hopeless_below!r}")
    for name in ("fixed_ns", "ias_n_maxes", "online_n_maxes"):
      values = getattr(self, name)
      if (not values and name != "online_n_maxes") or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.n_max
                           for n in values):
        raise ValueError(f"ias.{name} must be integers in [1, n_max={self.n_max}], got {values}")
    for name in ("ias_estimates", "online_estimate"):
      values = getattr(self, name)
      for value in (values,) if isinstance(values, str) else values:
        if value not in ESTIMATES:
          raise ValueError(f"ias.{name} must name estimates in {ESTIMATES}, got {value!r}")
    if not isinstance(self.online_calibrated, bool):
      raise ValueError(f"ias.online_calibrated must be True or False, got "
                       f"{self.online_calibrated!r}")
    if self.deepconf_warmup > self.n_max:
      raise ValueError(f"ias.deepconf_warmup must be <= n_max={self.n_max}, got "
                       f"{self.deepconf_warmup}")


def live_draw(models: ias_models.Models, cfg: IasConfig, temperature: float,
              scored: bool = True) -> draws.LiveDraw:
  tokenizer = models.tokenizer
  dec = decode.DecodeConfig(max_new_tokens=cfg.max_new_tokens,
                            policy=decode.SamplingPolicy(temperature=temperature),
                            stop_tokens=(tokenizer.eos_id,), pad_id=tokenizer.pad_id,
                            confidence_top_k=cfg.confidence_top_k)
  score_fn = (ias_models.score_fn(models.prm_cfg, models.levels, models.step_end_ids,
                                  models.base_in_calibrated, models.step_verifier is not None,
                                  policy_cfg=models.policy_cfg, temperature=temperature)
              if scored else ias_models.unscored)
  return draws.LiveDraw(models.policy_cfg, dec, score_fn,
                        functools.partial(extract_answer_ids, tokenizer=tokenizer),
                        group_window=cfg.group_window)


def rule_scores(problems, pool: draws.Pool, tokenizer) -> np.ndarray:
  """score_QxN of the rule verifier on every pool sample's text (host)."""
  tokens_QxNxM = np.asarray(pool.tokens_QxNxM)
  lengths_QxN = np.asarray(pool.lengths_QxN)
  return np.array([[step_checker.score(p.question, tokenizer.decode(tokens_QxNxM[q, s, :n]))
                    for s, n in enumerate(lengths_QxN[q])]
                   for q, p in enumerate(problems)], np.float32)



def _data(models: ias_models.Models, cfg: IasConfig, problems, seed: int) -> dict:
  scorer = {"base": models.base, "calibrated": models.calibrated, "policy": models.policy}
  if models.step_verifier is not None:
    scorer["verifier"] = models.step_verifier
  return {"policy": models.policy, "prompts": ias_models.encode_prompts(problems, models.tokenizer),
          "score_cost": 1, "key": jax.random.fold_in(jax.random.key(cfg.seed), seed),
          "scorer": scorer}


def design_pools(models: ias_models.Models, cfg: IasConfig, pools_dir: str):
  """({temperature: correct_QxN}, difficulty_Q) of the design split; unscored samples."""
  samples = cfg.design_pool
  problems = arithmetic.problems(cfg.design_questions, cfg.design_seed, cfg.design_difficulties)
  gold_Q = np.array([p.answer for p in problems])
  data = _data(models, cfg, problems, cfg.design_seed)
  correct = {}
  for temperature in cfg.temperatures:
    logging.info("design split: %d x %d samples at temperature %g", len(problems), samples,
                 temperature)
    pool = draws.build_pool(live_draw(models, cfg, temperature, scored=False), data,
                            len(problems), samples, rows=cfg.pool_rows,
                            path=os.path.join(pools_dir, "full", f"design_t{temperature:g}.npz"))
    correct[temperature] = np.asarray(pool.answers_QxN) == gold_Q[:, None]
  return correct, np.array([p.difficulty for p in problems])


@dataclasses.dataclass(frozen=True)
class Split:
  """A split's problems, its full pool (token confidences kept) and its `PoolSplit`."""
  name: str
  problems: list
  full_pool: draws.Pool
  pool_split: ias_eval.PoolSplit


def build_split(name: str, models: ias_models.Models, cfg: IasConfig, problems, seed: int,
                temperature: float, prior: combined.CombinedEstimate, pools_dir: str) -> Split:
  """Draws (or resumes) the split's pool, adds the rule verifier, saves the compact copy."""
  features = ias_models.question_features(models, [format_prompt(p) for p in problems])
  logging.info("%s: drawing %d x %d samples", name, len(problems), cfg.n_max)
  pool = draws.build_pool(live_draw(models, cfg, temperature), _data(models, cfg, problems, seed),
                          len(problems), cfg.n_max, rows=cfg.pool_rows,
                          path=os.path.join(pools_dir, "full", f"{name}.npz"))
  scores = np.concatenate([np.asarray(pool.scores_QxNxC),
                           rule_scores(problems, pool, models.tokenizer)[..., None]], -1)
  pool = pool._replace(scores_QxNxC=scores)
  prompt_tokens_Q = features["prompt_tokens"]
  prompt_len = float(np.mean(prompt_tokens_Q))
  length = float(np.mean(pool.lengths_QxN))
  cols = scoring.columns(models.levels)
  estimates = {"base": features["base"], "calibrated_q0.1": features["calibrated"][:, cols["q0.1"]],
               "calibrated_mean": features["calibrated"][:, cols["mean"]],
               "combined": prior(ias_models.combined_features(features))}
  split = ias_eval.PoolSplit(
      pool=pool, channels=models.channels, gold_Q=np.array([p.answer for p in problems]),
      difficulty_Q=np.array([p.difficulty for p in problems]), prompt_tokens_Q=prompt_tokens_Q,
      estimates=estimates,
      # Mean keys attended: a generated token sees the prompt and half the solution on
      # average; the PRM reads prompt + solution once, causally.
      policy_flops=forward_flops_per_token(models.policy_cfg, prompt_len + length / 2),
      prm_flops=forward_flops_per_token(models.prm_cfg, (prompt_len + length) / 2))
  save_split(os.path.join(pools_dir, f"{name}.npz"), split)
  return Split(name, problems, pool, split)


def save_split(path: str, split: ias_eval.PoolSplit) -> None:
  """The compact pool (no token confidences, no tokens) and everything evaluate reads."""
  pool = pool_store.drop_confidences(split.pool)
  pool = pool._replace(tokens_QxNxM=np.zeros(pool.answers_QxN.shape + (1,), np.int32))
  pool_store.save_pool(path, pool, gold_Q=split.gold_Q, difficulty_Q=split.difficulty_Q,
                       prompt_tokens_Q=split.prompt_tokens_Q,
                       channels=np.array(split.channels),
                       flops=np.array([split.policy_flops, split.prm_flops]),
                       **{f"estimate_{k}": v for k, v in split.estimates.items()})


def load_split(path: str) -> ias_eval.PoolSplit:
  """A `save_split` file as the PoolSplit `ias_sweep.evaluate` reads."""
  pool, extra = pool_store.load_pool(path)
  return ias_eval.PoolSplit(
      pool=pool, channels=tuple(str(c) for c in extra["channels"]), gold_Q=extra["gold_Q"],
      difficulty_Q=extra["difficulty_Q"], prompt_tokens_Q=extra["prompt_tokens_Q"],
      estimates={k[len("estimate_"):]: v for k, v in extra.items() if k.startswith("estimate_")},
      policy_flops=float(extra["flops"][0]), prm_flops=float(extra["flops"][1]))


def sweep_settings(cfg: IasConfig, channels, match_n: int) -> ias_sweep.SweepSettings:
  """What `ias_sweep.evaluate` sweeps. The headline selector is chosen on validation among the
  learned step verifier (when there is one, else the calibrated PRM) and the policy's own
  likelihood, each as best-of-N or a score-weighted vote; the online allocator reads the
  chosen selector's channel."""
  learned = "verifier" if "verifier_last" in channels else "calibrated"
  own = ias_models.LIKELIHOOD
  candidates = (f"best:{learned}_last", f"best:{learned}_min", f"vote:{learned}_last",
                f"best:{own}", f"vote:{own}")
  aggregations = ("majority", f"best:{ias_models.RULE}", "best:calibrated_last", "vote:calibrated_last",
                  "best:base_last") + tuple(a for a in candidates
                                            if not a.startswith(("best:calibrated_last",
                                                                 "vote:calibrated_last")))
  return ias_sweep.SweepSettings(
      fixed_ns=cfg.fixed_ns, orders=cfg.orders, aggregations=aggregations,
      candidates=candidates, qs=cfg.qs, ias_n_maxes=cfg.ias_n_maxes,
      ias_estimates=cfg.ias_estimates, budgets=cfg.budgets,
      online_channel=ias_sweep.SELECTED, online_solved_at=cfg.online_solved_at,
      online_hopeless_below=cfg.online_hopeless_below,
      online_prior_strength=cfg.online_prior_strength, online_estimate=cfg.online_estimate,
      online_calibrated=cfg.online_calibrated, online_n_maxes=cfg.online_n_maxes,
      match_n=match_n, per_round=cfg.per_round, rows=cfg.rows,
      resamples=cfg.bootstrap_resamples, seed=cfg.seed)


def pool_probe_features(split: Split, cfg: IasConfig) -> np.ndarray:
  """features_QxNxF (`probe.features`) of every pool sample, as the loop's replay sees them."""
  pool = split.full_pool
  q, n, m = pool.confidence_QxNxM.shape
  lowest_QxN = np.asarray(confidence.lowest_group_confidence(
      pool.confidence_QxNxM.reshape(q * n, m), pool.lengths_QxN.reshape(-1),
      cfg.group_window)).reshape(q, n)
  prior_QxN = np.broadcast_to(split.pool_split.estimates["combined"][:, None], (q, n))
  return probe_lib.features(lowest_QxN, np.asarray(pool.scores_QxNxC[..., 0]), prior_QxN)


def fit_probes(split: Split, cfg: IasConfig) -> dict:
  """The probe estimates, fit on every sample of `split`'s pool (the validation split)."""
  x_QxNxF = pool_probe_features(split, cfg)
  target_QxN = probe_lib.leave_one_out_rate(split.pool_split.correct_QxN)
  return {kind: probe_lib.ProbeEstimate.fit(kind, x_QxNxF.reshape(-1, x_QxNxF.shape[-1]),
                                            target_QxN.reshape(-1))
          for kind in probe_lib.KINDS}


def other_methods(split: Split, cfg: IasConfig, probes: dict, aggregation: str,
                  curves: dict) -> dict:
  """Adaptive-Consistency, DeepConf-online (low, high) and probe IAS on the full pool (they
  read token confidences), each matched against the fixed curve it selects like."""
  ps = split.pool_split
  full = dataclasses.replace(ps, pool=split.full_pool._replace(scores_QxNxC=ps.pool.scores_QxNxC))
  loop = LoopConfig(n_max=ps.num_samples, per_round=cfg.per_round, rows=cfg.rows,
                    num_channels=len(ps.channels))
  replay = draws.PoolDraw(confidence_window=cfg.group_window, group_window=cfg.group_window)
  data = {"pool": full.pool, "score_cost": 1,
          "prior_Q": jnp.asarray(ps.estimates["combined"], jnp.float32)}
  num_q = len(ps.gold_Q)
  prompt_Q = ps.prompt_tokens_Q.astype(np.float64)

  def summarize(state, answer_Q, pays_prm, matched_to, extra_prm_Q=0.0):
    """extra_prm_Q: PRM tokens read besides the samples an aggregation pays for."""
    kept_QxN = np.asarray(state.kept())
    answers_QxN = np.asarray(state.answers_QxN)
    correct_Q = np.asarray(answer_Q) == ps.gold_Q
    flops_Q = ((np.asarray(state.tokens_Q) + prompt_Q) * ps.policy_flops
               + (pays_prm * np.asarray(state.scored_tokens_Q) + extra_prm_Q) * ps.prm_flops)
    run = ias_eval.MethodRun(correct_Q, ((answers_QxN == ps.gold_Q[:, None]) & kept_QxN).any(1),
                             np.asarray(state.drawn_Q), flops_Q)
    return {**run.summary(ps.difficulty_Q), "matched_to": matched_to,
            "accuracy_interval": ias_eval.accuracy_interval(correct_Q, cfg.bootstrap_resamples,
                                                            cfg.seed),
            "matched": ias_eval.match(curves[matched_to], run, resamples=cfg.bootstrap_resamples,
                                      seed=cfg.seed)}

  full_target = np.full(num_q, ps.num_samples, np.int32)
  kept = lambda state: state.kept()
  out = {}
  state = adaptive.run(replay, data, full_target, loop=loop,
                       rule=StopRule("adaptive_consistency", threshold=cfg.consistency_threshold))
  out["adaptive_consistency"] = summarize(
      state, selection.majority_vote(state.answers_QxN, kept(state)), False, "majority")
  for variant, keep in (("low", 10.0), ("high", 90.0)):
    rule = StopRule("deepconf", threshold=cfg.deepconf_tau, warmup=cfg.deepconf_warmup,
                    keep_percent=keep)
    state = adaptive.run(replay, data, full_target, rule=rule, loop=loop)
    answer_Q = selection.weighted_vote(state.answers_QxN, state.confidence_QxN, kept(state))
    out[f"deepconf_{variant}"] = summarize(state, answer_Q, False, "majority")
  pays = ias_eval.reads_prm(aggregation, ps.channels)
  for kind, estimate in probes.items():
    fn = probe_lib.target_fn(estimate, channel=0, n_max=ps.num_samples, q=cfg.q)
    state = adaptive.run(replay, data, full_target, rule=StopRule(), loop=loop,
                         probe=adaptive.Probe(1, fn))
    answer_Q = ias_eval.aggregate(state.answers_QxN, state.scores_QxNxC, kept(state),
                                  aggregation, ps.channels)
    # The combined probe reads the calibrated PRM on its first sample (slot 0, drawn first) and
    # at the empty prefix (its prior), beside what the aggregation pays for.
    extra_Q = 0.0
    if kind == "combined":
      extra_Q = np.asarray(ps.pool.prompt_len_Q + ps.pool.lengths_QxN[:, 0]) + prompt_Q
    out[f"probe_{kind}"] = summarize(state, answer_Q, pays, aggregation, extra_Q)
  return out


def evaluate_beams(split: Split, models: ias_models.Models, cfg: IasConfig,
                   beam_cfg: beam_study.BeamStudyConfig, temperature: float) -> dict:
  """Fixed beam searches and IAS-of-K / IAS-of-M on the split's first questions."""
  ps = split.pool_split
  n = min(beam_cfg.questions, len(split.problems))
  problems = split.problems[:n]
  runs = beam_study.run_beams(models, problems, ias_models.prompt_ids(problems, models.tokenizer), beam_cfg,
                              temperature=temperature, q=cfg.q,
                              key=jax.random.fold_in(jax.random.key(cfg.seed), 7))
  difficulty_Q, prompt_Q = ps.difficulty_Q[:n], ps.prompt_tokens_Q[:n]
  by = lambda x: {str(d): float(np.mean(x[difficulty_Q == d])) for d in np.unique(difficulty_Q)}
  out, per_question = {}, {}
  for name, (correct_Q, tokens_Q, prm_Q, generations_Q) in runs.items():
    flops_Q = (tokens_Q + prompt_Q) * ps.policy_flops + prm_Q * ps.prm_flops
    per_question[name] = (np.asarray(correct_Q, np.float64), flops_Q)
    out[name] = {"accuracy": float(correct_Q.mean()),
                 "accuracy_interval": ias_eval.accuracy_interval(correct_Q, cfg.bootstrap_resamples, cfg.seed),
                 "samples": float(generations_Q.mean()), "policy_tokens": float(tokens_Q.mean()),
                 "prm_tokens": float(prm_Q.mean()), "flops": float(flops_Q.mean()),
                 "accuracy_by_difficulty": by(correct_Q),
                 "samples_by_difficulty": by(generations_Q.astype(float))}
  fixed = [name for name in out if name.startswith("fixed")]
  curve = {"correct_KxQ": np.stack([per_question[f][0] for f in fixed]),
           "flops_KxQ": np.stack([per_question[f][1] for f in fixed])}
  for name in ("ias_of_k", "ias_of_m"):
    correct_Q, flops_Q = per_question[name]
    out[name]["matched_to"] = "fixed beam search"
    out[name]["matched"] = ias_eval.match(
        curve, ias_eval.MethodRun(correct_Q, correct_Q, np.zeros(n), flops_Q),
        resamples=cfg.bootstrap_resamples, seed=cfg.seed)
  return {"questions": n, "variants": out}


def run_ias_study(config, workdir: str) -> dict:
  cfg = from_mapping(IasConfig, config.ias, "ias")
  criteria = from_mapping(regime.RegimeCriteria, config.regime, "regime")
  if not set(criteria.n_max_choices) <= set(cfg.fixed_ns):
    raise ValueError(f"regime.n_max_choices must be points of ias.fixed_ns={cfg.fixed_ns} (the "
                     f"accuracy to reach is fixed N = N_max's), got {criteria.n_max_choices}")
  if cfg.design_pool < max(criteria.n_max_choices):
    raise ValueError(f"ias.design_samples must be 0 (n_max) or at least the largest of "
                     f"regime.n_max_choices={criteria.n_max_choices}, got {cfg.design_samples}")
  models = ias_models.load_models(config)
  pools_dir = os.path.join(workdir, "pools")
  os.makedirs(os.path.join(pools_dir, "full"), exist_ok=True)

  correct, difficulty_Q = design_pools(models, cfg, pools_dir)
  stats = regime.candidate_stats(correct, difficulty_Q, criteria.n_max_choices)
  chosen = regime.choose_regime(stats, criteria)
  control = regime.negative_control(stats, chosen["temperature"], chosen["n_max"])
  logging.info("regime: %s; control: %s", regime.describe(chosen), regime.describe(control))
  temperature, mix = chosen["temperature"], range(chosen["lo"], chosen["hi"] + 1)

  estimate = ias_models.fit_combined(models, config.calibrate_workdir)
  val = build_split("validation", models, cfg,
                    arithmetic.problems(cfg.validation_questions, cfg.validation_seed, mix),
                    cfg.validation_seed, temperature, estimate, pools_dir)
  test = build_split("test", models, cfg,
                     arithmetic.problems(cfg.test_questions, cfg.test_seed, mix),
                     cfg.test_seed, temperature, estimate, pools_dir)
  control_split = None
  if cfg.control_questions:
    control_split = build_split(
        "control", models, cfg,
        arithmetic.problems(cfg.control_questions, cfg.control_seed, cfg.design_difficulties),
        cfg.control_seed, temperature, estimate, pools_dir)
  settings = sweep_settings(cfg, models.channels, chosen["n_max"])
  atomic_file.write_json(os.path.join(pools_dir, "settings.json"),
                         {"sweep": dataclasses.asdict(settings), "regime": chosen,
                          "control_regime": control}, default=_json_default)
  results = ias_sweep.evaluate(val.pool_split, test.pool_split,
                               control_split and control_split.pool_split, settings)
  aggregation = results["aggregation"]
  # What the confidence-reading methods are matched against: the same averaged curves.
  test_curves = ias_eval.fixed_curves(test.pool_split,
                                      [k for k in cfg.fixed_ns if k <= cfg.n_max],
                                      ("majority", aggregation), orders=cfg.orders, seed=cfg.seed)
  probes = fit_probes(val, cfg)
  results["test"]["methods"].update(other_methods(test, cfg, probes, aggregation, test_curves))
  beam_cfg = from_mapping(beam_study.BeamStudyConfig, config.beam, "beam")
  logging.info("beam search on %d test questions", beam_cfg.questions)
  success_Q = test.pool_split.correct_QxN.mean(1)
  results.update({
      "regime": {**chosen, "described": regime.describe(chosen), "control": control,
                 "control_described": regime.describe(control), "candidates": stats},
      "beam": evaluate_beams(test, models, cfg, beam_cfg, temperature),
      "channels": list(models.channels),
      # How well each estimate predicts a test question's success rate (its n_max samples).
      "estimate_brier": {name: float(np.mean((p - success_Q) ** 2))
                         for name, p in test.pool_split.estimates.items()},
      "success_rate_by_difficulty": {
          str(d): float(success_Q[test.pool_split.difficulty_Q == d].mean())
          for d in np.unique(test.pool_split.difficulty_Q)},
      "flops_per_token": {"policy": test.pool_split.policy_flops,
                          "prm": test.pool_split.prm_flops},
      "num_questions": {"design": cfg.design_questions, "validation": cfg.validation_questions,
                        "test": cfg.test_questions, "control": cfg.control_questions},
      "design_samples": cfg.design_pool,
  })
  results = json.loads(json.dumps(results, default=_json_default))
  atomic_file.write_json(os.path.join(workdir, "results.json"), results)
  return results


def _json_default(x):
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serializable: {type(x).__name__}")
