"""Calibration study: MC labels from the policy, a base PRM, every calibration method, and a
step verifier trained on exact step labels."""

import dataclasses
import hashlib
import os
import shutil

import jax
import ml_collections
import numpy as np
import sklearn.metrics
from absl import logging

from adaptive_jax import atomic_file
from adaptive_jax.choose import lowest
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.policy.evaluate import complete
from adaptive_jax.policy.load import load_policy
from adaptive_jax.prm import calibration, fit, headroom, mc_data, metrics, saved, step_verifier
from adaptive_jax.prm.model import MEAN
from adaptive_jax.sampler.decode import SamplingPolicy
from adaptive_jax.tasks.arithmetic import (
  MAX_DIFFICULTY,
  MIN_DIFFICULTY,
  ArithmeticSource,
  check_difficulties,
)
from adaptive_jax.tasks.problem import follows_gold_steps, format_prompt
from adaptive_jax.train.trained import load_trained
from adaptive_jax.typed_config import check_choice, check_int, check_open_interval, from_mapping


@dataclasses.dataclass(frozen=True)
class McConfig:
  """See configs/calibrate_small.py."""
  calibration_questions: int = 64
  test_questions: int = 48
  conformal_questions: int = 32
  base_questions: int = 96
  validation_questions: int = 32
  calibration_seed: int = 10
  test_seed: int = 11
  conformal_seed: int = 12
  base_seed: int = 13
  validation_seed: int = 14
  num_responses: int = 4
  num_rollouts: int = 4
  max_steps: int = 8
  temperature: float = 0.7
  max_new_tokens: int = 224
  questions_per_shard: int = 16
  seed: int = 0
  difficulties: tuple[int, ...] = tuple(range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1))

  def __post_init__(self):
    object.__setattr__(self, "difficulties",
                       check_difficulties("mc.difficulties", self.difficulties))
    for name in ("calibration_questions", "test_questions", "conformal_questions",
                 "base_questions", "validation_questions", "num_responses", "num_rollouts", "max_new_tokens",
                 "questions_per_shard"):
      check_int("mc", name, getattr(self, name))
    seeds = ("calibration_seed", "test_seed", "conformal_seed", "base_seed", "validation_seed")
    for name in (*seeds, "max_steps", "seed"):
      check_int("mc", name, getattr(self, name), minimum=0)
    if len({getattr(self, name) for name in seeds}) < len(seeds):
      raise ValueError(f"mc.{', '.join(seeds)} must differ (each split draws its own "
                       f"questions), got {[getattr(self, name) for name in seeds]}")
    check_open_interval("mc", "temperature", self.temperature, 0.0)


STEP_VERIFIER_EXAMPLES = ("prefixes", "solutions")


@dataclasses.dataclass(frozen=True)
class PrmConfig:
  model: ModelConfig  # or "policy" in the config: the policy's model
  backbone: str = "policy"  # "policy", "random", or a finished train_policy workdir
  base_max_difficulty: int = 3
  base_adapter: str = "full"
  base_steps: int = 300
  calibration_steps: int = 300
  calibration_learning_rate: float = 3e-3
  calibration_batch_size: int = 256
  adapter: str = "lora"
  lora_rank: int = 8
  lora_alpha: float = 16.0
  batch_size: int = 32
  learning_rate: float = 1e-3
  levels: tuple[float, ...] = (0.1, 0.5, 0.9)
  seed: int = 0  # the base PRM's init and batches
  calibration_seed: int = 0  # the calibration's (LoRA init, batches): vary it with the base fixed
  step_verifier_steps: int = 0  # the step verifier's (step_verifier.py); 0: none
  step_verifier_adapter: str = "full"  # it shares the base PRM's other settings
  # "prefixes": a row per solution prefix (step_verifier.step_examples); "solutions": a row
  # per solution read at every line end (solution_examples), the same labels in 1/L the rows.
  step_verifier_examples: str = "prefixes"

  def __post_init__(self):
    check_choice("prm", "base_max_difficulty", self.base_max_difficulty,
                 range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1))
    for name in ("base_steps", "calibration_steps", "lora_rank", "batch_size",
                 "calibration_batch_size"):
      check_int("prm", name, getattr(self, name))
    check_int("prm", "seed", self.seed, minimum=0)
    check_int("prm", "calibration_seed", self.calibration_seed, minimum=0)
    check_int("prm", "step_verifier_steps", self.step_verifier_steps, minimum=0)
    if not isinstance(self.backbone, str) or not self.backbone:
      raise ValueError(f"prm.backbone must be 'policy', 'random' or a train_policy workdir, got "
                       f"{self.backbone!r}")
    check_choice("prm", "adapter", self.adapter, fit.ADAPTERS)
    check_choice("prm", "base_adapter", self.base_adapter, fit.ADAPTERS)
    check_choice("prm", "step_verifier_adapter", self.step_verifier_adapter, fit.ADAPTERS)
    check_choice("prm", "step_verifier_examples", self.step_verifier_examples,
                 STEP_VERIFIER_EXAMPLES)
    for name in ("calibration_learning_rate", "learning_rate", "lora_alpha"):
      check_open_interval("prm", name, getattr(self, name), 0.0)
    if not self.levels:
      raise ValueError("prm.levels must hold quantile levels in (0, 1), got ()")
    for level in self.levels:
      check_open_interval("prm", "levels", level, 0.0, 1.0)
    if any(a >= b for a, b in zip(self.levels, self.levels[1:])):
      raise ValueError(f"prm.levels must be strictly increasing, got {tuple(self.levels)}")
    # The conformal bound and coverage read the 0.1 quantile, quantile_median the 0.5 one.
    if not {0.1, 0.5} <= set(self.levels):
      raise ValueError(f"prm.levels must include 0.1 and 0.5 (the lower bound and the median), "
                       f"got {tuple(self.levels)}")


@dataclasses.dataclass(frozen=True)
class CalibrationEvalConfig:
  """How the PRMs' calibration is measured: ECE bins, conformal miscoverage, histogram bins."""
  num_bins: int = 10
  conformal_alpha: float = 0.1
  histogram_bins: int = 10

  def __post_init__(self):
    check_int("eval", "num_bins", self.num_bins)
    check_int("eval", "histogram_bins", self.histogram_bins)
    check_open_interval("eval", "conformal_alpha", self.conformal_alpha, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class SelectConfig:
  """Calibration settings tried on the validation questions: every (learning rate, batch size)
  pair is fit, and the one whose calibrated mean scores the lowest validation Brier is kept.
  Empty: prm's own value only."""
  learning_rates: tuple[float, ...] = ()
  batch_sizes: tuple[int, ...] = ()

  def __post_init__(self):
    for value in self.learning_rates:
      check_open_interval("select", "learning_rates", value, 0.0)
    for value in self.batch_sizes:
      check_int("select", "batch_sizes", value)

  def candidates(self, prm: PrmConfig) -> list[dict]:
    return [{"calibration_learning_rate": lr, "calibration_batch_size": bs}
            for lr in self.learning_rates or (prm.calibration_learning_rate,)
            for bs in self.batch_sizes or (prm.calibration_batch_size,)]


def _mc_records(split, size, seed, policy, mc: McConfig, workdir, difficulties=None):
  """(records, source): MC records of `size` questions of `source` (difficulties cycling
  through `difficulties`, by default mc.difficulties), generated or resumed; `policy` =
  (params, model_cfg, fingerprint, tokenizer)."""
  params, model_cfg, fingerprint, tokenizer = policy
  sampling = SamplingPolicy(temperature=mc.temperature)
  complete_fn = lambda prompts, key: complete(params, model_cfg, prompts, tokenizer, key=key,
                                              max_new_tokens=mc.max_new_tokens, policy=sampling)
  source = ArithmeticSource(size=size, seed=seed,
                            difficulties=tuple(difficulties or mc.difficulties))
  paths = mc_data.generate_shards(
      [source[i] for i in range(size)], complete_fn, jax.random.fold_in(jax.random.key(mc.seed),
                                                                        seed),
      os.path.join(workdir, f"mc_{split}"), questions_per_shard=mc.questions_per_shard,
      num_responses=mc.num_responses, num_rollouts=mc.num_rollouts, max_steps=mc.max_steps,
      check=source.check,
      settings={"policy": fingerprint, "question_seed": seed, "difficulties": source.difficulties,
                "temperature": mc.temperature, "max_new_tokens": mc.max_new_tokens,
                "seed": mc.seed})
  return mc_data.read_records(paths), source


def _last(losses_S) -> float | None:
  return float(losses_S[-1]) if len(losses_S) else None


def policy_fingerprint(params) -> str:
  """A short digest of the policy's weights: MC records are only resumed with the same policy."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()[:16]


def _scores(p, y, difficulty, num_bins):
  return {"brier": metrics.brier(p, y), "ece": metrics.ece(p, y, num_bins),
          "brier_by_difficulty": {str(k): v for k, v in
                                  metrics.per_bucket(metrics.brier, p, y, difficulty).items()},
          "mean_prediction": float(np.mean(p))}


def _follows_gold(record, source) -> bool:
  problem = source[record["question_id"]]
  return follows_gold_steps(problem, record["text"][len(format_prompt(problem)):])


# What each reference predictor groups records by; the last reads the gold solution.
_REFERENCE_KEYS = {
    "difficulty": lambda r, source: r["difficulty"],
    "difficulty_step": lambda r, source: (r["difficulty"], r["step"]),
    "difficulty_step_gold_prefix": lambda r, source: (r["difficulty"], r["step"],
                                                      _follows_gold(r, source)),
}


def _reference_predictors(cal, test, y_cal, y_test, cal_source, test_source,
                          base_brier: float) -> dict:
  """Brier (and ratio to the base PRM) of group-mean predictors fit on `cal` (targets `y_cal`),
  scored on `test` (`y_test`), and the MC noise floor (headroom.py): what the calibrated PRM's
  score sits between."""
  scores = {}
  for name, key in _REFERENCE_KEYS.items():
    p = headroom.group_mean_predictions([key(r, cal_source) for r in cal], y_cal,
                                        [key(r, test_source) for r in test])
    scores[name] = metrics.brier(p, y_test)
  scores["mc_noise_floor"] = headroom.mc_noise_floor(
      y_test, np.array([r["num_rollouts"] for r in test]))
  return {name: {"brier": b, "ratio_to_base": b / base_brier} for name, b in scores.items()}


def _backbone_params(prm: PrmConfig, policy_cfg: ModelConfig, policy_params):
  """The weights the PRM's backbone starts from (None: a fresh init), checked against
  prm.model: the policy's, or those of another trained LM (e.g. a stronger verifier)."""
  if prm.backbone == "random":
    return None
  if prm.backbone == "policy":
    cfg, params, source = policy_cfg, policy_params, "the policy"
  else:
    _, cfg, params = load_trained(prm.backbone, train_command=(
        f"python -m experiments.train_policy --config=... --workdir={prm.backbone}"))
    source = prm.backbone
  differ = [f"prm.model.{f.name} is {getattr(prm.model, f.name)!r}, {source}'s is "
            f"{getattr(cfg, f.name)!r}" for f in dataclasses.fields(ModelConfig)
            if getattr(prm.model, f.name) != getattr(cfg, f.name)]
  if differ:
    raise ValueError(f"prm.backbone={prm.backbone!r}: prm.model must be the model of "
                     f"{source}, but " + "; ".join(differ))
  return params


def gold_prefix_auc(predictions, records, source) -> dict:
  """How well predictions separate prefixes that follow the gold solution's steps from those
  that have left it, within each difficulty (so knowing the difficulty alone scores 0.5):
  {difficulty: {"auc", "gold", "wrong"}} over records at step >= 1 (step 0, the question alone,
  follows the gold trivially); "auc" is None where one class is empty; "mean" averages the
  difficulties that have both."""
  gold_N = np.array([_follows_gold(r, source) for r in records])
  step_N = np.array([r["step"] for r in records])
  difficulty_N = np.array([r["difficulty"] for r in records])
  out = {}
  for d in sorted(set(difficulty_N.tolist())):
    rows = (difficulty_N == d) & (step_N >= 1)
    gold, wrong = int(np.sum(gold_N[rows])), int(np.sum(~gold_N[rows]))
    auc = (float(sklearn.metrics.roc_auc_score(gold_N[rows], np.asarray(predictions)[rows]))
           if gold and wrong else None)
    out[str(d)] = {"auc": auc, "gold": gold, "wrong": wrong}
  aucs = [v["auc"] for v in out.values() if v["auc"] is not None]
  return {"by_difficulty": out, "mean": float(np.mean(aucs)) if aucs else None}


def _verification_aucs(params_by_name: dict, model_cfg: ModelConfig, examples: list[dict],
                       tokenizer) -> dict:
  """Within-difficulty AUCs of each PRM (name -> (params, output column)) on step examples:
  "step" over every prefix (all lines so far correct vs not), "final_answer" over whole
  solutions (right vs wrong answer); None without examples."""
  if not examples:
    return {"step": None, "final_answer": None}
  labels = [e["label"] for e in examples]
  difficulty = [e["difficulty"] for e in examples]
  out = {"step": {}, "final_answer": {}}
  for name, (params, column) in params_by_name.items():
    p = fit.predict(params, model_cfg, examples, tokenizer=tokenizer)[:, column]
    out["step"][name] = step_verifier.within_difficulty_auc(p, labels, difficulty)
    out["final_answer"][name] = step_verifier.final_answer_auc(p, examples)
  return out


def run_calibration_study(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Writes results.json (Brier/ECE per method on the validation and the test questions, the
  calibration settings tried and chosen on validation, the step verifier's AUCs) and
  predictions.npz (test); saves the base, calibrated and step verifier PRMs (saved.py)."""
  mc = from_mapping(McConfig, config.mc, "mc")
  ev = from_mapping(CalibrationEvalConfig, config.eval, "eval")
  select = from_mapping(SelectConfig, config.select, "select")
  # prm.model "policy": the policy's own model config, known once the policy is loaded.
  prm_values = dict(config.prm)
  own_model = prm_values["model"] == "policy"
  prm = from_mapping(PrmConfig, {**prm_values, "model": (
      None if own_model else ModelConfig.from_dict(prm_values["model"]))}, "prm")
  policy_params, policy_cfg, tokenizer, policy_results = load_policy(config, workdir)
  if own_model:
    prm = dataclasses.replace(prm, model=policy_cfg)
  policy = (policy_params, policy_cfg, policy_fingerprint(policy_params), tokenizer)
  backbone_params = _backbone_params(prm, policy_cfg, policy_params)  # checked before sampling
  os.makedirs(workdir, exist_ok=True)
  cal, cal_source = _mc_records("calibration", mc.calibration_questions, mc.calibration_seed,
                                policy, mc, workdir)
  test, test_source = _mc_records("test", mc.test_questions, mc.test_seed, policy, mc, workdir)
  # Split conformal needs scores of a model that did not train on them: its own questions.
  held, _ = _mc_records("conformal", mc.conformal_questions, mc.conformal_seed, policy, mc,
                        workdir)
  # Calibration settings and the point estimate are chosen on these.
  val, _ = _mc_records("validation", mc.validation_questions, mc.validation_seed, policy, mc,
                       workdir)
  logging.info("MC records: %d calibration, %d conformal, %d validation, %d test", len(cal),
               len(held), len(val), len(test))

  # The base PRM learns from final outcomes of easier questions of its own, as public PRMs
  # are trained on other data than the policy's hard questions: miscalibrated on the rest.
  easy, _ = _mc_records("base", mc.base_questions, mc.base_seed, policy, mc, workdir,
                        difficulties=range(MIN_DIFFICULTY, prm.base_max_difficulty + 1))
  base, base_losses = fit.train_base_prm(
      easy, prm.model, steps=prm.base_steps, batch_size=prm.batch_size,
      learning_rate=prm.learning_rate, seed=prm.seed, backbone_params=backbone_params,
      adapter=prm.base_adapter, lora_rank=prm.lora_rank, lora_alpha=prm.lora_alpha,
      tokenizer=tokenizer, run="base PRM")
  logging.info("base PRM: final loss %s", _last(base_losses))
  # The step verifier: the base PRM's recipe, on exact step labels of the calibration split's
  # solutions instead of outcomes (step_verifier.py).
  verifier, verifier_examples = None, []
  if prm.step_verifier_steps:
    verifier_examples = step_verifier.step_examples(cal)
    if not verifier_examples:
      raise ValueError("prm.step_verifier_steps > 0, but the calibration split's MC records "
                       "hold no solution lines to train a step verifier on; set "
                       "prm.step_verifier_steps=0")
    settings = dict(steps=prm.step_verifier_steps, batch_size=prm.batch_size,
                    learning_rate=prm.learning_rate, seed=prm.seed,
                    backbone_params=backbone_params, adapter=prm.step_verifier_adapter,
                    lora_rank=prm.lora_rank, lora_alpha=prm.lora_alpha, tokenizer=tokenizer,
                    run="step verifier")
    if prm.step_verifier_examples == "solutions":
      verifier, verifier_losses = fit.train_step_verifier(
          step_verifier.solution_examples(cal), prm.model, **settings)
    else:
      verifier, verifier_losses = fit.train_base_prm(verifier_examples, prm.model,
                                                     label_field="label", **settings)
    logging.info("step verifier: final loss %s", _last(verifier_losses))
  target = lambda records: np.array([r["target"] for r in records])
  y_cal, y_val, y_test = target(cal), target(val), target(test)
  p_cal = fit.predict(base, prm.model, cal, tokenizer=tokenizer)[:, 0]

  # Every choice is made on the validation questions; the test questions are read once, last.
  candidates = []
  for settings in select.candidates(prm):
    params, losses = fit.calibrate_prm(
        base, cal, prm.model, levels=prm.levels, steps=prm.calibration_steps,
        batch_size=settings["calibration_batch_size"],
        learning_rate=settings["calibration_learning_rate"], seed=prm.calibration_seed,
        adapter=prm.adapter, lora_rank=prm.lora_rank, lora_alpha=prm.lora_alpha,
        tokenizer=tokenizer, run=f"calibration {settings}")
    p_val = fit.predict(params, prm.model, val, tokenizer=tokenizer)[:, MEAN]
    candidates.append((metrics.brier(p_val, y_val), settings, params))
    logging.info("calibration %s: final loss %s, validation Brier %.4f", settings,
                 _last(losses), candidates[-1][0])
  _, chosen, calibrated = lowest(candidates, lambda c: c[0],
                                 what="calibration candidates (validation Brier)")
  saved.save_prm(workdir, "base", base, prm.model)
  saved.save_prm(workdir, "calibrated", calibrated, prm.model, prm.levels)
  if verifier is not None:
    saved.save_prm(workdir, "step_verifier", verifier, prm.model)
  else:  # a verifier left by an earlier run with other settings is not this run's
    shutil.rmtree(os.path.join(workdir, "prm", "step_verifier"), ignore_errors=True)
  lower, median = prm.levels.index(0.1), prm.levels.index(0.5)
  q_held = fit.predict(calibrated, prm.model, held, tokenizer=tokenizer)[:, :MEAN]
  # Its guarantee is per question: the held questions' records are grouped by question_id.
  conformal = calibration.ConformalLowerBound.fit(
      q_held[:, lower], target(held), question=[r["question_id"] for r in held],
      alpha=ev.conformal_alpha)
  baselines = {"temperature": calibration.TemperatureScaling.fit(p_cal, y_cal),
               "isotonic": calibration.IsotonicCalibration.fit(p_cal, y_cal),
               "histogram": calibration.HistogramBinning.fit(p_cal, y_cal,
                                                             num_bins=ev.histogram_bins)}

  def predictions(records):
    p_base = fit.predict(base, prm.model, records, tokenizer=tokenizer)[:, 0]
    out = fit.predict(calibrated, prm.model, records, tokenizer=tokenizer)
    return {"base": p_base, "calibrated": out[:, MEAN], "quantile_median": out[:, median],
            **{name: method(p_base) for name, method in baselines.items()}}, out[:, :MEAN]

  val_predictions, _ = predictions(val)
  val_difficulty = np.array([r["difficulty"] for r in val])
  validation = {name: _scores(p, y_val, val_difficulty, ev.num_bins)
                for name, p in val_predictions.items()}
  # The point estimate a user should take: the method best on validation, base excluded.
  estimate = lowest((name for name in validation if name != "base"),
                    lambda name: validation[name]["brier"],
                    what="point estimates (validation Brier)")

  test_predictions, q_test = predictions(test)
  p_test = test_predictions["base"]
  difficulty = np.array([r["difficulty"] for r in test])
  question = np.array([r["question_id"] for r in test])
  lower_conformal = conformal(q_test[:, lower])
  verification = {"status": "disabled"}
  if verifier is not None:
    test_examples = step_verifier.step_examples(test)
    verification = {
        "status": "trained",
        "training_examples": len(verifier_examples),
        "positive_share": float(np.mean([e["label"] for e in verifier_examples])),
        "test_examples": len(test_examples),
        "test_finals": sum(e["final"] for e in test_examples),
        # The three PRMs on one set: the test split's step examples.
        **_verification_aucs({"step_verifier": (verifier, 0), "base": (base, 0),
                              "calibrated": (calibrated, MEAN)}, prm.model, test_examples,
                             tokenizer)}
  methods = {name: _scores(p, y_test, difficulty, ev.num_bins)
             for name, p in test_predictions.items()}
  results = {
      "policy": {"source": config.get("policy_source", "trained"), "fine_tune": policy_results},
      "num_records": {"calibration": len(cal), "conformal": len(held), "validation": len(val),
                      "test": len(test), "base_training": len(easy)},
      "methods": methods,
      "validation": validation,
      "selection": {
          "candidates": [{**settings, "validation_brier": b} for b, settings, _ in candidates],
          "chosen": chosen,
          "estimate": estimate,
          "estimate_test_brier": methods[estimate]["brier"]},
      # Records of a question are correlated: the interval resamples whole test questions.
      "brier_ratio_to_base": {
          name: metrics.brier_ratio(p, p_test, y_test, question)
          for name, p in test_predictions.items() if name != "base"},
      "coverage": {
          **{f"q{level:g}": float(np.mean(y_test <= q_test[:, i]))
             for i, level in enumerate(prm.levels)},
          "lower_q0.1_raw": float(np.mean(y_test >= q_test[:, lower])),
          "lower_q0.1_conformal": float(np.mean(y_test >= lower_conformal)),
          # What split conformal guarantees: test questions all of whose records are covered.
          "lower_q0.1_conformal_questions": calibration.question_coverage(
              y_test >= lower_conformal, question),
          "conformal_nominal": 1 - ev.conformal_alpha},
      # Reference predictors (not PRMs): what knowing only the difficulty (and step) scores,
      # what an exact step verifier would add (an oracle: it reads the gold solution), and the
      # floor the MC targets' own noise sets.
      "reference": _reference_predictors(cal, test, y_cal, y_test, cal_source, test_source,
                                         methods["base"]["brier"]),
      # Verification, apart from calibration: gold-following vs wrong prefixes, per difficulty.
      "gold_prefix_auc": {name: gold_prefix_auc(test_predictions[name], test, test_source)
                          for name in ("base", "calibrated")},
      # A PRM trained on exact step labels (step_verifier.py), against base and calibrated.
      "step_verifier": verification,
      "target_by_difficulty": {str(k): float(np.mean(y_test[difficulty == k]))
                               for k in sorted(set(difficulty.tolist()))},
  }
  atomic_file.write_json(os.path.join(workdir, "results.json"), results)
  atomic_file.write_npz(os.path.join(workdir, "predictions.npz"),
                        dict(target=y_test, difficulty=difficulty, quantiles=q_test,
                             lower_conformal=lower_conformal, **test_predictions))
  return results
