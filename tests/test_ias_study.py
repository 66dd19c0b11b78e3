"""The IAS study end to end on a tiny policy and PRM: every method, compute, matched ratios."""

import json

import numpy as np
import pytest

from adaptive_jax.policy.train import train_policy
from adaptive_jax.prm import ias_study
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
  run_calibration_study(config, calibrate_dir)
  return policy_dir, calibrate_dir


def _config(policy_dir, calibrate_dir):
  config = ias_small.get_config()
  config.policy_workdir, config.calibrate_workdir = policy_dir, calibrate_dir
  ias = config.ias
  ias.validation_questions, ias.test_questions, ias.n_max, ias.fixed_ns = 8, 8, 4, (1, 2, 4)
  ias.per_round, ias.rows, ias.pool_rows, ias.max_new_tokens = 2, 8, 16, 12
  ias.deepconf_warmup, ias.group_window, ias.bootstrap_resamples = 2, 4, 50
  config.beam.questions, config.beam.fixed, config.beam.max_steps = 4, ((1, 2), (2, 2)), 3
  config.beam.num_beams, config.beam.expansions, config.beam.max_step_tokens = 2, 2, 8
  return config


def test_study_runs_every_method(workdirs, tmp_path):
  results = ias_study.run_ias_study(_config(*workdirs), str(tmp_path))
  assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
  test = results["test"]
  assert set(test["methods"]) == {
      "ias_base", "ias_calibrated_q0.1", "ias_calibrated_mean", "ias_combined",
      "ias_oracle_difficulty_rate", "adaptive_consistency", "deepconf_low", "deepconf_high",
      "probe_confidence", "probe_combined"}
  assert results["aggregation"] in ias_study.AGGREGATIONS
  for n, by_aggregation in test["fixed"].items():
    for name, m in by_aggregation.items():
      assert m["samples"] == int(n)
      assert (m["prm_tokens"] > 0) == (ias_study.AGGREGATIONS[name][1] is not None)
  # A selected answer is one of the samples: accuracy <= coverage; coverage grows with N.
  coverage = [test["fixed"][n]["majority"]["coverage"] for n in ("1", "2", "4")]
  assert coverage == sorted(coverage)
  for by_aggregation in test["fixed"].values():
    assert all(m["accuracy"] <= m["coverage"] for m in by_aggregation.values())
  for m in test["methods"].values():
    assert m["accuracy"] <= m["coverage"] and "matched_coverage" in m
    assert 1 <= m["samples"] <= 4 and 0 <= m["accuracy"] <= 1
    low, high = m["accuracy_interval"]
    assert low <= m["accuracy"] <= high
    assert m["flops"] > 0
  beams = results["beam"]["variants"]
  assert set(beams) == {"fixed_K1_M2", "fixed_K2_M2", "ias_of_k", "ias_of_m"}
  assert beams["fixed_K2_M2"]["samples"] >= beams["fixed_K1_M2"]["samples"] > 0
  assert all(b["prm_tokens"] > 0 for b in beams.values())
  # Self-consistency methods never read the PRM; IAS reads at least the empty prefix.
  assert test["methods"]["adaptive_consistency"]["prm_tokens"] == 0
  assert test["methods"]["ias_calibrated_q0.1"]["prm_tokens"] > 0
  assert test["methods"]["probe_combined"]["prm_tokens"] > 0
  assert set(results["probe_brier"]) == {"probe_confidence", "probe_combined"}
  assert all(np.isfinite(w) for kind in results["probe_weights"].values() for w in kind.values())


def test_probe_pays_the_prm_for_its_first_sample_only(workdirs, tmp_path, monkeypatch):
  # Under majority vote only the combined probe reads the PRM: on its first sample and at the
  # empty prefix, whatever number of samples it then draws.
  monkeypatch.setattr(ias_study, "choose_aggregation", lambda mean_accuracy: "majority")
  config = _config(*workdirs)
  config.beam.questions = 1
  results = ias_study.run_ias_study(config, str(tmp_path))
  assert results["aggregation"] == "majority"
  test = results["test"]
  probe, ias_q = test["methods"]["probe_combined"], test["methods"]["ias_calibrated_q0.1"]
  first_sample = test["fixed"]["1"]["calibrated_vote"]["prm_tokens"]  # N = 1, PRM-scored
  empty_prefix = ias_q["prm_tokens"]  # IAS under majority vote reads the empty prefix only
  assert first_sample > 0 and empty_prefix > 0
  assert probe["samples"] > 1  # it draws more than the sample it scores
  assert probe["prm_tokens"] == pytest.approx(first_sample + empty_prefix)
  assert test["methods"]["probe_confidence"]["prm_tokens"] == 0


def test_missing_calibration_names_the_command(workdirs, tmp_path):
  config = _config(workdirs[0], str(tmp_path / "nothing"))
  with pytest.raises(FileNotFoundError, match="experiments.calibrate"):
    ias_study.run_ias_study(config, str(tmp_path / "out"))


def test_matched_ratio_interpolates_the_envelope():
  curve = [(1.0, 0.5), (2.0, 0.7), (4.0, 0.65), (8.0, 0.9)]  # a dip: the envelope keeps 0.7
  assert ias_study.matched_ratio(curve, 0.6, 0.75)["ratio"] == pytest.approx(0.75 / 1.5)
  assert ias_study.matched_ratio(curve, 0.8, 3.0)["ratio"] == pytest.approx(3.0 / 6.0)
  assert ias_study.matched_ratio(curve, 0.4, 0.5)["ratio"] == pytest.approx(0.5)
  above = ias_study.matched_ratio(curve, 0.95, 2.0)
  assert above["not_reached"] and above["accuracy_gain_at_equal_flops"] == pytest.approx(0.25)


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match="ias.fixed_ns"):
    ias_study.IasConfig(fixed_ns=(0, 2))
  with pytest.raises(ValueError, match="ias.q"):
    ias_study.IasConfig(q=1.0)
  with pytest.raises(ValueError, match="beam.fixed"):
    ias_study.beam_study.BeamStudyConfig(fixed=((0, 4),))
  with pytest.raises(ValueError, match="ias.deepconf_warmup"):
    ias_study.IasConfig(n_max=4, fixed_ns=(1,), deepconf_warmup=8)


def test_shipped_config_builds():
  config = ias_small.get_config()
  cfg = ias_study.IasConfig(**config.ias)
  ias_study.beam_study.BeamStudyConfig(**config.beam)
  assert cfg.n_max == max(cfg.fixed_ns) and cfg.deepconf_warmup < cfg.n_max
