"""The calibration study end to end on a tiny policy: MC shards, methods, results, figures."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from adaptive_jax.prm import saved
from adaptive_jax.studies import calibration_study as study
from adaptive_jax.studies.calibration_study import run_calibration_study
from adaptive_jax.tasks.arithmetic import ArithmeticSource
from adaptive_jax.tasks.problem import format_completion, format_prompt
from configs import calibrate_small, policy_small
from tests.tiny_workdirs import tiny_model, tiny_policy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def policy_workdir(tmp_path_factory):
  return tiny_policy(str(tmp_path_factory.mktemp("policy")))


def _config(policy_workdir):
  config = calibrate_small.get_config()
  config.policy_workdir = policy_workdir
  config.mc.calibration_questions, config.mc.test_questions = 16, 16
  config.mc.conformal_questions, config.mc.base_questions = 8, 6
  config.mc.validation_questions = 8
  config.mc.num_responses, config.mc.num_rollouts, config.mc.max_steps = 2, 2, 2
  config.mc.max_new_tokens, config.mc.questions_per_shard = 24, 8
  tiny_model(config.prm.model)
  config.prm.base_steps, config.prm.calibration_steps, config.prm.batch_size = 3, 3, 8
  # The step verifier only where a test reads it: a "full" fit compiles for seconds.
  config.prm.step_verifier_steps, config.prm.step_verifier_adapter = 0, "head"
  config.select.learning_rates, config.select.batch_sizes = (1e-3,), (8,)
  return config


def test_study_writes_every_method_and_figures(policy_workdir, tmp_path, monkeypatch):
  workdir = tmp_path / "calibrate"
  config = _config(policy_workdir)
  config.prm.step_verifier_steps = 3
  # Targets that vary by difficulty (the 3-step policy never answers right: all would be 0).
  monkeypatch.setattr(study, "complete", _difficulty_coin_policy(config))
  results = run_calibration_study(config, str(workdir))
  assert json.loads((workdir / "results.json").read_text()) == json.loads(json.dumps(results))
  assert set(results["methods"]) == {"base", "calibrated", "quantile_median", "temperature",
                                     "isotonic", "histogram"}
  for scores in results["methods"].values():
    assert 0 <= scores["brier"] <= 1 and 0 <= scores["ece"] <= 1
  assert results["num_records"]["test"] >= 16 * 2  # at least the step-0 prefix per response
  assert results["num_records"]["conformal"] >= 8 * 2
  assert results["num_records"]["validation"] >= 8 * 2
  assert set(results["validation"]) == set(results["methods"])
  assert results["num_records"]["base_training"] >= 6 * 2
  predictions = np.load(workdir / "predictions.npz")
  assert predictions["quantiles"].shape == (results["num_records"]["test"], 3)
  # The quantiles start at the base probability and 3 steps move them little.
  np.testing.assert_allclose(predictions["quantile_median"], predictions["base"], atol=0.2)
  # By brute force on the saved test predictions: each method's Brier, the targets by
  # difficulty (which the fake policy makes fall from difficulty 1 to 8).
  target, difficulty = predictions["target"], predictions["difficulty"]
  for name, scores in results["methods"].items():
    assert scores["brier"] == pytest.approx(np.mean((predictions[name] - target) ** 2)), name
  by_difficulty = {str(d): target[difficulty == d].mean() for d in range(1, 9)}
  assert results["target_by_difficulty"] == pytest.approx(by_difficulty)
  assert by_difficulty["1"] > by_difficulty["8"] + 0.3, by_difficulty
  assert set(results["reference"]) == {"difficulty", "difficulty_step",
                                       "difficulty_step_gold_prefix", "mc_noise_floor"}
  for reference in results["reference"].values():
    assert 0 < reference["brier"] < 1
    assert reference["ratio_to_base"] == pytest.approx(reference["brier"]
                                                       / results["methods"]["base"]["brier"])
  assert set(results["brier_ratio_to_base"]) == set(results["methods"]) - {"base"}
  for name, ratio in results["brier_ratio_to_base"].items():
    assert ratio["ratio"] == pytest.approx(results["methods"][name]["brier"]
                                           / results["methods"]["base"]["brier"])
    assert ratio["low"] <= ratio["ratio"] <= ratio["high"]
  verifier = results["step_verifier"]
  assert verifier["status"] == "trained" and verifier["training_examples"] > 0
  assert 0 <= verifier["positive_share"] <= 1
  assert verifier["test_examples"] >= verifier["test_finals"]
  for kind in ("step", "final_answer"):
    assert set(verifier[kind]) == {"step_verifier", "base", "calibrated"}
  params, model_cfg, levels = saved.load_prm(str(workdir), "step_verifier", command="calibrate")
  assert levels == () and "head" in params and "delta" not in params
  assert model_cfg == saved.load_prm(str(workdir), "base", command="calibrate")[1]
  proc = subprocess.run([sys.executable, "-m", "experiments.calibrate_figures",
                         f"--workdir={workdir}", f"--out_dir={tmp_path / 'figs'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert sorted(os.listdir(tmp_path / "figs")) == ["prm_brier_by_difficulty.png",
                                                   "prm_reliability.png"]


def test_calibration_seed_changes_the_calibration_not_the_base(policy_workdir, tmp_path):
  config = _config(policy_workdir)
  run_calibration_study(config, str(tmp_path / "a"))
  config.prm.calibration_seed = 1
  config.prm.backbone = policy_workdir  # the policy's weights again, by path
  run_calibration_study(config, str(tmp_path / "b"))
  a, b = (np.load(tmp_path / name / "predictions.npz") for name in ("a", "b"))
  np.testing.assert_array_equal(a["target"], b["target"])  # same MC records
  np.testing.assert_array_equal(a["base"], b["base"])
  assert not np.array_equal(a["calibrated"], b["calibrated"])


def test_backbone_of_another_shape_raises_naming_the_fields(policy_workdir, tmp_path):
  config = _config(policy_workdir)
  config.prm.backbone = policy_workdir
  config.prm.model.num_layers = 2
  with pytest.raises(ValueError, match="prm.model.num_layers is 2, .*'s is 1"):
    run_calibration_study(config, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()  # raised before any sampling


def test_resume_with_changed_mc_settings_raises(policy_workdir, tmp_path):
  config = _config(policy_workdir)
  config.mc.calibration_questions = config.mc.test_questions = config.mc.conformal_questions = 1
  config.mc.base_questions, config.mc.max_new_tokens = 1, 4
  config.prm.base_steps = config.prm.calibration_steps = 1
  run_calibration_study(config, str(tmp_path))
  config.mc.temperature = 1.0
  with pytest.raises(ValueError, match=r"temperature: 0.7 there, 1.0 now"):
    run_calibration_study(config, str(tmp_path))


def test_step_verifier_steps_0_disables_it(policy_workdir, tmp_path):
  config = _config(policy_workdir)
  config.mc.calibration_questions = config.mc.test_questions = config.mc.conformal_questions = 1
  config.mc.base_questions = config.mc.validation_questions = 1
  config.prm.base_steps = config.prm.calibration_steps = config.prm.step_verifier_steps = 1
  config.prm.step_verifier_examples = "solutions"  # a row per solution, read at line ends
  run_calibration_study(config, str(tmp_path))
  assert (tmp_path / "prm" / "step_verifier" / "prm.json").exists()
  config.prm.step_verifier_examples = "lines"
  with pytest.raises(ValueError, match="prm.step_verifier_examples"):
    run_calibration_study(config, str(tmp_path))
  config.prm.step_verifier_examples = "prefixes"
  config.prm.step_verifier_steps = 0
  results = run_calibration_study(config, str(tmp_path))  # the same MC records, resumed
  assert results["step_verifier"] == {"status": "disabled"}
  assert not (tmp_path / "prm" / "step_verifier").exists()  # not the earlier run's
  with pytest.raises(FileNotFoundError, match="no saved step_verifier PRM"):
    saved.load_prm(str(tmp_path), "step_verifier", command="calibrate")


def test_missing_policy_names_the_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="python -m experiments.train_policy"):
    run_calibration_study(_config(str(tmp_path / "none")), str(tmp_path / "out"))


def test_calibrate_config_builds_into_the_studys_typed_configs():
  config = calibrate_small.get_config()
  from adaptive_jax.nn.config import ModelConfig
  from adaptive_jax.studies.calibration_study import (
    CalibrationEvalConfig,
    McConfig,
    PrmConfig,
    SelectConfig,
  )
  from adaptive_jax.typed_config import from_mapping
  typed = {"mc": from_mapping(McConfig, config.mc, "mc"),
           "eval": from_mapping(CalibrationEvalConfig, config.eval, "eval"),
           "select": from_mapping(SelectConfig, config.select, "select"),
           "prm": from_mapping(PrmConfig, {**dict(config.prm), "model": ModelConfig.from_dict(
               config.prm.model)}, "prm")}
  for section, cfg in typed.items():  # every field as the config gives it, none left default
    values = config[section].to_dict()
    assert set(values) == {f.name for f in dataclasses.fields(cfg)}, section
    for name, value in values.items():
      if name != "model":
        assert getattr(cfg, name) == (tuple(value) if isinstance(value, list) else value), name
  # backbone "policy" starts the PRMs from the policy's weights, which needs its very model
  # (the study raises on any field that differs), and the base PRM sees only easier questions.
  assert typed["prm"].backbone == "policy"
  assert typed["prm"].model == ModelConfig.from_dict(policy_small.get_config().model)
  assert typed["prm"].base_max_difficulty < max(typed["mc"].difficulties)


@pytest.mark.parametrize("section, field, value, message", [
    ("mc", "num_rollouts", 0, "mc.num_rollouts must be an integer >= 1"),
    ("mc", "temperature", -0.5, r"mc.temperature must be a number in \(0.0, inf\)"),
    ("mc", "base_seed", 10, "must differ"),
    ("prm", "adapter", "qlora", r"prm.adapter must be one of \('head', 'lora', 'full'\)"),
    ("prm", "base_adapter", "none", r"prm.base_adapter must be one of \('head', 'lora', 'full'\)"),
    ("prm", "backbone", "", "prm.backbone must be 'policy', 'random' or a train_policy workdir"),
    ("prm", "calibration_seed", -1, "prm.calibration_seed must be an integer >= 0"),
    ("prm", "step_verifier_steps", -1, "prm.step_verifier_steps must be an integer >= 0"),
    ("prm", "step_verifier_adapter", "qlora",
     r"prm.step_verifier_adapter must be one of \('head', 'lora', 'full'\)"),
    ("prm", "lora_alpha", 0.0, r"prm.lora_alpha must be a number in \(0.0, inf\)"),
    ("prm", "base_max_difficulty", 9, "prm.base_max_difficulty must be one of"),
    ("prm", "levels", (0.1, 1.5), r"prm.levels must be a number in \(0.0, 1.0\)"),
    ("prm", "levels", (0.5, 0.1, 0.9), r"prm.levels must be strictly increasing, got \(0.5, 0.1"),
    ("prm", "levels", (0.1, 0.1, 0.5), "prm.levels must be strictly increasing"),
    ("prm", "levels", (0.2, 0.5, 0.9), r"prm.levels must include 0.1 and 0.5 .*got \(0.2, 0.5"),
    ("prm", "levels", (0.1, 0.9), "prm.levels must include 0.1 and 0.5"),
    ("eval", "conformal_alpha", 1.0, r"eval.conformal_alpha must be a number in \(0.0, 1.0\)"),
])
def test_bad_study_config_raises_naming_the_field(tmp_path, section, field, value, message):
  config = _config(str(tmp_path / "no_policy"))
  config[section][field] = value
  # Raised while reading the config, before the (missing) policy is looked for.
  with pytest.raises(ValueError, match=message):
    run_calibration_study(config, str(tmp_path / "out"))


def _difficulty_coin_policy(config):
  """A fake policy for study.complete: from a prefix on the gold path it finishes the gold
  solution w.p. 1 - (d - 1) / 8 at difficulty d, else writes a wrong answer. MC targets then
  vary with the difficulty (d = 1: 1, d = 8: 1/8 at the gold step-0 prefix; 0 off the path)."""
  mc = config.mc
  sources = [ArithmeticSource(size=mc.calibration_questions, seed=mc.calibration_seed),
             ArithmeticSource(size=mc.test_questions, seed=mc.test_seed),
             ArithmeticSource(size=mc.conformal_questions, seed=mc.conformal_seed),
             ArithmeticSource(size=mc.validation_questions, seed=mc.validation_seed),
             ArithmeticSource(size=mc.base_questions, seed=mc.base_seed,
                              difficulties=tuple(range(1, config.prm.base_max_difficulty + 1)))]
  problems = {format_prompt(s[i]): s[i] for s in sources for i in range(len(s))}
  rng = np.random.default_rng(0)

  def complete(params, model_cfg, prompts, tokenizer, *, key, max_new_tokens, policy):
    del params, model_cfg, tokenizer, key, max_new_tokens, policy
    out = []
    for text in prompts:
      prompt = next(p for p in problems if text.startswith(p))
      problem, done = problems[prompt], text[len(prompt):]
      gold = format_completion(problem)
      p_gold = 1 - (problem.difficulty - 1) / 8
      out.append(gold[len(done):] if gold.startswith(done) and rng.random() < p_gold
                 else "z = 1 + 1 = 2\nanswer: -1\n")
    return out
  return complete


def test_study_on_varied_targets_calibrates_the_base_prm(policy_workdir, tmp_path, monkeypatch):
  config = _config(policy_workdir)
  config.mc.calibration_questions, config.mc.test_questions = 64, 32
  config.mc.num_rollouts = 4
  config.prm.calibration_steps = 300  # the head fits on frozen features: seconds
  config.prm.step_verifier_steps = 300
  monkeypatch.setattr(study, "complete", _difficulty_coin_policy(config))
  results = run_calibration_study(config, str(tmp_path / "calibrate"))
  # The fake policy's lines are gold or "z = 1 + 1 = 2", "answer: -1" (both wrong): the step
  # verifier learns to tell them apart, even as a head on the 3-step policy's features
  # (measured: step AUC 0.78, final-answer AUC 0.90); the base PRM (3 steps of outcomes) does
  # not (0.53, 0.32).
  verifier = results["step_verifier"]
  assert 0.3 < verifier["positive_share"] < 0.7, verifier["positive_share"]
  auc = {kind: {name: verifier[kind][name]["pooled"] for name in verifier[kind]}
         for kind in ("step", "final_answer")}
  assert auc["final_answer"]["step_verifier"] > 0.8, auc
  for kind in auc:
    assert auc[kind]["step_verifier"] > auc[kind]["base"] + 0.15, auc
  target = {int(d): t for d, t in results["target_by_difficulty"].items()}
  assert target[1] > 0.6 > 0.3 > target[8] > 0, target
  methods, reference = results["methods"], results["reference"]
  # The MC noise floor is below what knowing the difficulty scores, which is below the base PRM
  # (trained on difficulties 1-3 only for 3 steps); calibration moves towards the difficulty's.
  assert 0 < reference["mc_noise_floor"]["brier"] < reference["difficulty"]["brier"]
  assert reference["difficulty"]["brier"] < methods["base"]["brier"]
  assert methods["calibrated"]["brier"] < 0.8 * methods["base"]["brier"], methods
  assert methods["isotonic"]["brier"] < methods["base"]["brier"]
  for scores in methods.values():
    assert 0 < scores["brier"] < 0.5 and 0 <= scores["ece"] <= 1


def test_calibration_settings_and_estimate_are_chosen_on_validation(policy_workdir, tmp_path,
                                                                    monkeypatch):
  config = _config(policy_workdir)
  config.mc.calibration_questions, config.mc.validation_questions = 32, 16
  config.prm.calibration_steps = 200
  # A rate that cannot move the head in 200 steps against two that can: validation decides.
  config.select.learning_rates, config.select.batch_sizes = (1e-7, 3e-3, 3e-2), (32,)
  monkeypatch.setattr(study, "complete", _difficulty_coin_policy(config))
  workdir = tmp_path / "calibrate"
  results = run_calibration_study(config, str(workdir))
  selection, validation = results["selection"], results["validation"]
  briers = [c["validation_brier"] for c in selection["candidates"]]
  assert [c["calibration_learning_rate"] for c in selection["candidates"]] == [1e-7, 3e-3, 3e-2]
  best = selection["candidates"][int(np.argmin(briers))]
  assert selection["chosen"] == {k: best[k] for k in selection["chosen"]}
  assert selection["chosen"]["calibration_learning_rate"] != 1e-7, briers
  # The kept (saved) calibrated PRM is the chosen one: its validation Brier is the minimum.
  assert validation["calibrated"]["brier"] == pytest.approx(min(briers), abs=1e-6)
  # At lr 1e-7 the calibration leaves stay at their zero init: the output is the base PRM's.
  assert briers[0] == pytest.approx(validation["base"]["brier"], abs=1e-3)
  assert selection["estimate"] == min((m for m in validation if m != "base"),
                                      key=lambda m: validation[m]["brier"])
  assert selection["estimate_test_brier"] == results["methods"][selection["estimate"]]["brier"]
