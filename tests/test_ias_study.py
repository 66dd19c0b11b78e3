"""The IAS study end to end on a tiny policy and PRM: every method, compute, matched ratios."""

import json

import numpy as np
import pytest

from adaptive_jax.policy.train import train_policy
from adaptive_jax.prm import ias_models, ias_study, ias_sweep
from adaptive_jax.sampler import pool_store
from adaptive_jax.tasks import step_checker
from benchmarks import ias as ias_benchmark
from adaptive_jax.prm.study import run_calibration_study
from configs import calibrate_small, ias_small, policy_small


def _tiny_model(model):
  model.num_layers, model.d_model, model.d_ff_big = 1, 32, 64
  model.num_heads, model.head_dim = 2, 16


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  policy_dir = str(tmp_path_factory.mktemp("policy"))
  config = policy_small.get_config()
  _tiny_model(config.model)
  config.task.train_difficulties = (1,)  # rows of 72 hold a whole difficulty-1 problem
  config.task.seq_len, config.task.batch_size, config.task.max_new_tokens = 72, 4, 8
  config.task.eval_problems_per_difficulty = 1
  config.train.num_steps, config.train.warmup_steps, config.train.lr_decay_steps = 3, 1, 3
  config.train.log_every = 3
  train_policy(config, policy_dir)
  calibrate_dir = str(tmp_path_factory.mktemp("calibrate"))
  config = calibrate_small.get_config()
  config.policy_workdir = policy_dir
  config.mc.calibration_questions, config.mc.test_questions = 8, 8
  config.mc.conformal_questions, config.mc.base_questions = 4, 4
  config.mc.num_responses, config.mc.num_rollouts, config.mc.max_steps = 1, 2, 1
  config.mc.max_new_tokens, config.mc.questions_per_shard = 16, 8
  _tiny_model(config.prm.model)
  config.prm.base_steps, config.prm.calibration_steps, config.prm.batch_size = 2, 2, 4
  config.prm.step_verifier_steps = 2
  run_calibration_study(config, calibrate_dir)
  return policy_dir, calibrate_dir


def _config(policy_dir, calibrate_dir):
  config = ias_small.get_config()
  config.policy_workdir, config.calibrate_workdir = policy_dir, calibrate_dir
  ias = config.ias
  ias.design_questions, ias.validation_questions, ias.test_questions = 8, 8, 8
  ias.control_questions, ias.design_difficulties, ias.temperatures = 8, (1, 2), (0.7,)
  ias.n_max, ias.fixed_ns, ias.ias_n_maxes, ias.orders = 4, (1, 2, 4), (2, 4), 3
  ias.qs, ias.budgets, ias.online_solved_at = (0.5, 0.99), (1.0, 2.0), (0.5,)
  ias.per_round, ias.rows, ias.pool_rows, ias.max_new_tokens = 2, 8, 16, 12
  ias.deepconf_warmup, ias.group_window, ias.bootstrap_resamples = 2, 4, 50
  config.regime.n_max_choices = (2, 4)
  config.beam.questions, config.beam.fixed, config.beam.max_steps = 4, ((1, 2), (2, 2)), 3
  config.beam.num_beams, config.beam.expansions, config.beam.max_step_tokens = 2, 2, 8
  return config


@pytest.fixture(scope="module")
def study(workdirs, tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("ias")
  return ias_study.run_ias_study(_config(*workdirs), str(tmp_path)), tmp_path


def test_study_chooses_a_regime_and_runs_every_method(study):
  results, tmp_path = study
  assert json.loads((tmp_path / "results.json").read_text()) == results
  chosen = results["regime"]
  assert (chosen["lo"], chosen["hi"]) == (1, 2) and chosen["n_max"] in (2, 4)
  assert chosen["described"].startswith("difficulties 1-2, temperature 0.7")
  assert results["aggregation"] in ("best:verifier_last", "best:verifier_min",
                                    "vote:verifier_last")
  test = results["test"]
  assert set(test["methods"]) == {
      "ias", "offline", "online", "adaptive_consistency", "deepconf_low", "deepconf_high",
      "probe_confidence", "probe_combined"}
  assert len(test["sweeps"]["ias"]) == 3 * 2 * 2  # estimates x qs x caps
  for n, by_aggregation in test["fixed"].items():
    for m in by_aggregation.values():
      assert m["samples"] == int(n) and m["accuracy"] <= m["coverage"] + 1e-9
  coverage = [test["fixed"][n]["coverage"]["accuracy"] for n in ("1", "2", "4")]
  assert coverage == sorted(coverage)
  for m in test["methods"].values():
    assert m["accuracy"] <= m["coverage"] and 1 <= m["samples"] <= 4
    lo, hi = m["matched"]["interval"]
    assert 0 < lo <= hi and m["flops"] > 0
  assert set(results["headline"]) == {"ias", "budget", "ias_control"}
  assert set(results["tiers"]["auc_within_difficulty"]) == set(results["channels"])
  assert results["channels"][-1] == "rule" and "verifier_last" in results["channels"]
  beams = results["beam"]["variants"]
  assert set(beams) == {"fixed_K1_M2", "fixed_K2_M2", "ias_of_k", "ias_of_m"}
  # The compact pools recompute the same headline: the benchmark's path.
  lines = ias_benchmark.ratio_lines(str(tmp_path / "pools"))
  assert lines[-3:] == ias_sweep.headline_lines(results)
  assert lines[0] == f"regime: {chosen['described']}"


def test_rule_verifier_scores_the_pool_texts(workdirs, study):
  """The rule channel is step_checker.score of each sample's decoded text: 1.0 only where
  every line is right (the answer included), so a wrong answer scores below 1."""
  results, tmp_path = study
  config = _config(*workdirs)
  full, _ = pool_store.load_pool(str(tmp_path / "pools" / "full" / "test.npz"))
  compact = ias_study.load_split(str(tmp_path / "pools" / "test.npz"))
  problems = ias_study._problems(8, config.ias.test_seed, range(results["regime"]["lo"],
                                                                results["regime"]["hi"] + 1))
  rule_QxN = compact.pool.scores_QxNxC[..., -1]
  for q, p in enumerate(problems):
    for s in range(4):
      text = ias_models.TOKENIZER.decode(full.tokens_QxNxM[q, s, :full.lengths_QxN[q, s]])
      assert rule_QxN[q, s] == np.float32(step_checker.score(p.question, text))
  assert (rule_QxN[compact.correct_QxN == 0] < 1).all()


def test_missing_calibration_names_the_command(workdirs, tmp_path):
  config = _config(workdirs[0], str(tmp_path / "nothing"))
  with pytest.raises(FileNotFoundError, match="experiments.calibrate"):
    ias_study.run_ias_study(config, str(tmp_path / "out"))


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match="ias.fixed_ns"):
    ias_study.IasConfig(fixed_ns=(0, 2))
  with pytest.raises(ValueError, match="ias.qs"):
    ias_study.IasConfig(qs=(1.0,))
  with pytest.raises(ValueError, match="ias.ias_estimates"):
    ias_study.IasConfig(ias_estimates=("oracle",))
  with pytest.raises(ValueError, match=r"ias.budgets must be .* each >= 1"):
    ias_study.IasConfig(budgets=(0.5, 2.0))
  assert ias_study.IasConfig(online_hopeless_below=0.0).online_hopeless_below == 0.0
  with pytest.raises(ValueError, match="ias.design_seed, validation_seed"):
    ias_study.IasConfig(design_seed=20)
  with pytest.raises(ValueError, match="beam.fixed"):
    ias_study.beam_study.BeamStudyConfig(fixed=((0, 4),))
  with pytest.raises(ValueError, match="ias.deepconf_warmup"):
    ias_study.IasConfig(n_max=4, fixed_ns=(1,), ias_n_maxes=(4,), deepconf_warmup=8)


def test_shipped_config_builds():
  config = ias_small.get_config()
  cfg = ias_study.IasConfig(**config.ias)
  ias_study.beam_study.BeamStudyConfig(**config.beam)
  criteria = ias_study.regime.RegimeCriteria(**config.regime)
  assert cfg.n_max == max(cfg.fixed_ns) == max(criteria.n_max_choices)
  assert cfg.deepconf_warmup < cfg.n_max


def test_regime_budgets_must_be_points_of_the_fixed_curve(workdirs, tmp_path):
  config = _config(*workdirs)
  config.regime.n_max_choices = (3,)
  with pytest.raises(ValueError, match=r"regime.n_max_choices must be points of ias.fixed_ns"):
    ias_study.run_ias_study(config, str(tmp_path))
