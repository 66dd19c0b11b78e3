"""The main job: the claims table from hand-made results, and every stage end to end on tiny
models, run twice (the second run skips every stage and touches no file), then once more
with one section changed."""

import json
import os

import pytest

from adaptive_jax import claims, main_job
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.policy.train import TaskConfig
from adaptive_jax.router.train import RouterConfig
from adaptive_jax.studies.beam_study import BeamStudyConfig
from adaptive_jax.studies.calibration_study import McConfig
from adaptive_jax.studies.ias_study import IasConfig
from adaptive_jax.studies.oracle_study import OracleConfig
from adaptive_jax.train.loop import typed_configs
from configs import duo_tiny, quick
from tests.tiny_workdirs import shrink_calibration, shrink_policy


def _matched(ratio, above=False):
  return {"ratio": ratio, "interval": [ratio * 0.8, ratio * 1.25], "above_curve": above}


def _router_row(k):
  ppl = lambda domain: {"exact": {"ppl": 20.0 + k + (domain == "python_stdlib")}}
  return {"paper": {"eval": {d: ppl(d) for d in ("python_stdlib", "shakespeare")}},
          "oracles": {"shakespeare": {"oracle_ppl": 16.0 + k}, "python_stdlib": {"oracle_ppl": 30.0}}}


def _results(ias_ratio=0.47, ias_above=False):
  budgets = {str(k): {"oracle_ppl": ppl} for k, ppl in enumerate([30.0, 17.5, 15.25, 16.0])}
  return {
      "duo": {"eval/ppl@all_small": 40.0, "eval/ppl@random_p0.5": 25.0,
              "eval/ppl@all_big": 20.0},
      "oracle": {"num_layers": 3, "domains": {
          "python_stdlib": {"all_big_ppl": 1.0, "budgets": {"1": {"oracle_ppl": 9.0}}},
          "shakespeare": {"all_big_ppl": 18.25, "budgets": budgets}}},
      "router": {"num_layers": 3, "domains": {"python_stdlib": {}, "shakespeare": {}},
                 "budgets": {str(k): _router_row(k) for k in (0, 1, 3)}},
      "calibrate": {"methods": {"base": {"brier": 0.2}, "calibrated": {"brier": 0.05}},
                    "brier_ratio_to_base": {"calibrated": {"ratio": 0.25, "low": 0.19,
                                                           "high": 0.31}}},
      "ias": {"regime": {"met": True, "reason": ""},
              "headline": {"ias": _matched(ias_ratio, above=ias_above),
                           "budget": _matched(0.38), "ias_control": _matched(2.0)}},
      "label_free": {"config": {"eval_samples": 8},
                     "start": {"test": {"pass@1": {"value": 0.25}},
                               "validation": {"pass@8": {"value": 0.5}}},
                     "headline": {"best_arm": "majority",
                                  "label_free_gain": {"value": 0.031, "interval": [-0.01, 0.07]},
                                  "supervised_gain": {"value": 0.052}}},
  }


def test_claims_table_reads_each_results_file():
  rows = {claim: (paper, ours) for claim, paper, ours in claims.claim_rows(_results())}
  ours = [o for _, o in rows.values()]
  assert ours[0] == "yes (20.00 < 25.00 < 40.00)"
  assert ours[1] == "yes (ppl 17.50 at k=1, all-big 18.25)"  # the plays, not the code domain
  assert ours[2] == "k = 2 of L = 3 (ppl 15.25)"
  assert ours[3] == "yes (k=1: oracle 17.00, paper router 21.00)"  # k nearest L/2, the plays
  assert ours[4] == "0.25x (0.200 -> 0.050), 90% CI [0.19, 0.31]"
  assert ours[5] == "0.47x [0.38, 0.59]"
  assert ours[6] == "0.38x [0.30, 0.47]"
  assert ours[7] == "2.00x [1.60, 2.50]"  # the control, reported whatever it shows
  assert ours[8] == "+0.031 [-0.010, +0.070] (majority; pass@1 0.250 at the start); gold SFT +0.052"
  assert [p for p, _ in rows.values()][4] == "0.29x (0.24 -> 0.07)"
  table = claims.claims_table(_results())
  assert all(claim in table and o in table for claim, o in zip(rows, ours))


def test_claims_table_above_curve_missing_and_not_decided():
  results = _results(ias_ratio=0.9, ias_above=True)
  results["calibrate"] = None
  ours = [o for _, _, o in claims.claim_rows(results)]
  assert ours[4] == claims.MISSING
  assert ours[5] == "0.90x [0.72, 1.12] (above every fixed N)"
  for row in results["router"]["budgets"].values():
    row["oracles"]["shakespeare"]["oracle_ppl"] = 99.0  # an oracle worse than the router
  assert claims.claim_rows(results)[3][2] == "no (k=1: oracle 99.00, paper router 21.00)"
  for row in results["router"]["budgets"].values():
    del row["oracles"]  # a study run without config.oracle_workdir
  assert claims.claim_rows(results)[3][2] == "no oracle rows (router ppl 21.00 at k=1)"
  # A regime that missed its criteria, and a policy that solves nothing: no number claimed.
  results = _results()
  results["ias"]["regime"] = {"met": False, "reason": "pass@1 0.05 below [0.30, 0.60]"}
  results["calibrate"]["target_by_difficulty"] = {"1": 0.19, "2": 0.0}
  ours = [o for _, _, o in claims.claim_rows(results)]
  assert ours[4] == ("not decided: the policy succeeds at most 0.19 of the time (difficulty 1); "
                     "calibration needs one that solves some problems (>= 0.3)")
  assert ours[5] == ours[6] == "not decided: pass@1 0.05 below [0.30, 0.60]"
  assert ours[7] == "2.00x [1.60, 2.50]"
  del results["ias"]["headline"]["ias_control"]
  assert claims.claim_rows(results)[7][2] == "no control run (ias.control_questions = 0)"
  results["label_free"]["start"]["validation"]["pass@8"]["value"] = 0.03
  assert claims.claim_rows(results)[8][2] == (
      "not decided: the start policy's validation pass@8 is 0.03 (< 0.1): no correct samples "
      "to learn from")


def _tiny_config(data_dir):
  """configs/quick.py with the tiny settings of tests/test_{oracle,ias}_study.py."""
  config = quick.get_config()
  config.duo = duo_tiny.get_config()
  config.duo.data.data_dir = data_dir
  config.duo.train.num_steps, config.duo.train.lr_decay_steps = 6, 6
  config.duo.train.log_every, config.duo.train.checkpoint_every = 3, 3
  o = config.oracle.oracle
  o.num_sequences, o.seq_len, o.chunk_sequences, o.split_depth = 4, 16, 2, 2
  o.budgets, o.random_patterns = (0, 1, 2, 3), 10
  o.sequential_sequences, o.sequential_seq_len, o.sequential_budgets = 2, 8, (0, 1, 3)
  o.skip_patterns, o.skip_sequences, o.text_budget = 40, 2, 1
  r = config.router.router  # the routers' held-out tokens are the oracle's
  r.budgets, r.schedules, r.num_steps, r.batch_size = (1,), ((2, 0),), 4, 4
  r.train_sequences, r.seq_len, r.eval_sequences = 4, 16, 4
  r.oracle_sequences, r.oracle_seq_len = 2, 8
  shrink_policy(config.policy)
  shrink_calibration(config.calibrate)
  ias = config.ias.ias
  ias.design_questions, ias.validation_questions, ias.test_questions = 8, 8, 8
  ias.control_questions, ias.design_difficulties, ias.temperatures = 8, (1, 2), (0.7,)
  ias.n_max, ias.fixed_ns, ias.ias_n_maxes, ias.orders = 4, (1, 2, 4), (2, 4), 3
  ias.qs, ias.budgets, ias.online_solved_at = (0.5, 0.99), (1.0, 2.0), (0.5,)
  ias.online_n_maxes = (2, 4)
  ias.per_round, ias.rows, ias.pool_rows, ias.max_new_tokens = 2, 8, 16, 12
  ias.deepconf_warmup, ias.group_window, ias.bootstrap_resamples = 2, 4, 50
  config.ias.regime.n_max_choices = (2, 4)
  beam = config.ias.beam
  beam.questions, beam.fixed, beam.max_steps = 4, ((1, 2), (2, 2)), 3
  beam.num_beams, beam.expansions, beam.max_step_tokens = 2, 2, 8
  lf = config.label_free.label_free
  lf.rounds, lf.prompts_per_round, lf.validation_questions, lf.test_questions = 3, 2, 2, 2
  lf.difficulties, lf.samples_per_prompt, lf.budget_n_max, lf.eval_samples = (1,), 2, 2, 2
  lf.steps, lf.batch_size, lf.max_new_tokens, lf.rows = 1, 2, 8, 8
  lf.bootstrap_resamples, lf.best_of_n_orders = 20, 2
  return config


def _mtimes(workdir):
  """mtime of every results file, NPZ, PNG and stage record under `workdir`."""
  return {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
          for root, _, names in os.walk(workdir) for name in names
          if name.endswith((".json", ".npz", ".png"))}


def test_main_job_runs_every_stage_then_skips_them(tmp_path, capsys):
  workdir = str(tmp_path / "main")
  config = _tiny_config(str(tmp_path / "data"))
  first = main_job.run_main(config, workdir)
  out = capsys.readouterr().out
  names = [stage.name for stage in main_job.STAGES]
  assert first["status"] == dict.fromkeys(names, "ran")
  for i, name in enumerate(names, 1):
    assert f"[{i}/8] {name} " in out
    assert os.path.exists(os.path.join(workdir, name, main_job.RECORD))
  assert out.count(": done in ") == 8
  assert "step 6/6" not in out  # the stages' own output went to their logs
  assert "step 6/6" in (tmp_path / "main" / "duo" / main_job.LOG).read_text()
  for name in ("duo", "oracle", "router", "policy", "calibrate", "ias", "label_free"):
    with open(os.path.join(workdir, name, "results.json")) as f:
      assert json.load(f) == first["results"][name]
  configs, dirs = main_job.stage_configs(config, workdir)
  pngs = main_job.STAGES[-1].outputs(configs, dirs)
  assert len(pngs) == 14
  for png in pngs:
    with open(os.path.join(workdir, "figures", png), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert first["table"] in out
  for claim, _, ours in claims.claim_rows(first["results"]):
    assert claim in out and ours != claims.MISSING
  before = _mtimes(workdir)

  second = main_job.run_main(config, workdir)
  out = capsys.readouterr().out
  assert second["status"] == dict.fromkeys(names, "skipped")
  assert out.count(": skipped, finished before") == 8
  assert _mtimes(workdir) == before
  assert second["table"] == first["table"]

  # A changed section reruns its stage and the stages that read it, nothing else.
  config.oracle.oracle.random_patterns = 12
  third = main_job.run_main(config, workdir)
  out = capsys.readouterr().out
  assert [name for name, s in third["status"].items() if s == "ran"] == ["oracle", "router",
                                                                         "figures"]
  assert "oracle (Duo-LLM stage 2 oracle): running (its config section changed" in out
  assert "router (Duo-LLM stage 3 routers): running (oracle ran again)" in out
  assert "figures (figure scripts): running (oracle ran again)" in out


def test_quick_config_sizes():
  config = quick.get_config()
  assert config.policy.train.num_steps == config.policy.train.lr_decay_steps == 600
  assert max(config.ias.ias.fixed_ns) == config.ias.ias.n_max == 16
  assert quick.get_config("small").calibrate.mc.calibration_questions == 1536
  paper = quick.get_config("paper")
  assert paper.duo.model.d_model == 2560 and paper.oracle.oracle.budgets == tuple(range(13))
  # Dense baselines at stage-1 size: with the small configs, not beside a paper-size model.
  assert paper.router.dense_workdir == config.router.dense_workdir == ""
  assert quick.get_config("small").router.dense_workdir
  with pytest.raises(ValueError, match="size in"):
    quick.get_config("huge")


@pytest.mark.parametrize("size", quick.SIZES)
def test_quick_config_sections_validate(size):
  config = quick.get_config(size)
  model, *_ = typed_configs(config.duo)
  OracleConfig(**config.oracle.oracle).validate_for(model.num_layers, model.max_len)
  RouterConfig.from_dict(config.router.router).validate_for(model.num_layers, model.max_len)
  ModelConfig.from_dict(config.policy.model)
  TaskConfig.from_dict(config.policy.task)
  McConfig(**config.calibrate.mc)
  assert config.calibrate.prm.model == config.policy.model  # the PRM starts from the policy
  IasConfig(**config.ias.ias)
  BeamStudyConfig(**config.ias.beam)
  assert set(config.minutes) == {stage.name for stage in main_job.STAGES}
