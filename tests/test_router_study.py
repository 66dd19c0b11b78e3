"""The stage-3 study end to end on a tiny trained Duo model, in process and as a user runs it."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.router import dense_baseline
from adaptive_jax.studies import router_study as study
from adaptive_jax.studies.oracle_study import run_oracle_study
from adaptive_jax.studies.router_study import run_router_study
from adaptive_jax.train.trained import load_trained
from configs import duo_small, oracle_small, router_small

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGETS = (1, 2)
# Shrinks router_small to seconds on one core (duo_tiny: 3 layers, max_len 32).
SMALL = {"budgets": BUDGETS, "num_steps": 20, "batch_size": 4, "train_sequences": 8,
         "seq_len": 16, "oracle_sequences": 2, "oracle_seq_len": 8, "eval_sequences": 2,
         "schedules": ((2, 0),)}


def _oracle(stage1, workdir, seq_len=16):
  config = oracle_small.get_config()
  config.stage1_workdir = stage1
  o = config.oracle
  o.num_sequences, o.seq_len, o.chunk_sequences, o.split_depth = 2, seq_len, 2, 2
  o.budgets = (0, 1, 2, 3)
  o.sequential_sequences, o.sequential_seq_len, o.sequential_budgets = 2, 8, (0, 1, 2, 3)
  o.skip_patterns, o.text_budget = 0, 1
  run_oracle_study(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def stages(stage1, tmp_path_factory):
  """The tiny stage-1 run, its oracle study on the routers' held-out tokens, dense baselines."""
  oracle = _oracle(stage1, str(tmp_path_factory.mktemp("oracle")))
  dense = str(tmp_path_factory.mktemp("dense"))
  stage1_config, _, _ = load_trained(stage1, train_command="-")
  dense_baseline.train_dense_baselines(stage1_config, BUDGETS, dense)
  return stage1, oracle, dense


def _config(stage1, oracle="", dense=""):
  config = router_small.get_config()
  config.stage1_workdir, config.oracle_workdir, config.dense_workdir = stage1, oracle, dense
  config.router.update(SMALL)
  return config


def test_study_results(stages, tmp_path):
  stage1, oracle, dense = stages
  results = run_router_study(_config(stage1, oracle, dense), str(tmp_path))
  assert json.loads((tmp_path / "results.json").read_text()) == results
  assert results["num_layers"] == 3 and results["train_tokens"] == 8 * 16
  assert set(results["domains"]) == {"shakespeare", "python_stdlib"}
  assert set(results["budgets"]) == {str(k) for k in BUDGETS}
  with open(os.path.join(oracle, "results.json")) as f:
    oracle_results = json.load(f)
  for k, row in results["budgets"].items():
    assert row["oracle_train_ppl"] > 1
    for name in ("paper", "imitation"):
      for domain, ev in row[name]["eval"].items():
        assert ev["exact"]["big_layers"] == int(k)  # budget-exact routing is exact
        assert abs(sum(ev["exact"]["big_by_layer"]) - int(k)) < 1e-6
        np.testing.assert_allclose(ev["exact"]["big_by_position"], int(k))
        # Width per layer: k big and 3 - k small FFNs (duo_tiny: 128 and 8).
        assert ev["exact"]["ffn_width"] == pytest.approx((int(k) * 128 + (3 - int(k)) * 8) / 3)
        assert 0 <= ev["argmax"]["big_layers"] <= 3 and ev["argmax"]["skip_layers"] == 0
        assert np.isfinite(ev["argmax"]["ppl"]) and ev["argmax"]["ppl"] > 1
    assert 0 <= row["imitation"]["train"]["agreement"] <= 1
    assert row["paper"]["train"]["temperature"] < 1.0  # annealed
    for domain, orc in row["oracles"].items():
      # The oracle study's rows for this budget and domain, on the same tokens.
      want = oracle_results["domains"][domain]["budgets"][k]
      assert orc["oracle_ppl"] == want["oracle_ppl"] and orc["fixed_ppl"] == want["fixed_ppl"]
      assert orc["oracle_ppl"] <= orc["fixed_ppl"] + 1e-9
      assert orc["context_consistent_tokens"] == 2 * 8
      sequential = oracle_results["domains"][domain]["sequential"]["budgets"][k]
      assert orc["context_consistent_ppl"] == pytest.approx(sequential["sequential_ppl"], rel=1e-6)
      assert orc["oracle_ppl_same_tokens"] == pytest.approx(sequential["oracle_ppl_same_tokens"],
                                                            rel=1e-6)
      agreement = orc["agreement"]
      assert agreement["num_decisions"] == 2 * 8 * 3
      assert all(0 <= agreement[n] <= 1 for n in ("paper", "imitation", "constant_per_layer"))
      # Exactly k big layers per token: (k/L)^2 + (1 - k/L)^2.
      assert agreement["budget_rate"] == pytest.approx((int(k) / 3) ** 2 + (1 - int(k) / 3) ** 2)
      for name in ("paper", "imitation"):
        assert orc[f"{name}_exact_ppl_same_tokens"] > 1
    assert row["dense"]["d_ff"] == dense_baseline.equal_compute_width(
        load_trained(stage1, train_command="-")[1], int(k))
    assert all(row["dense"][d]["ppl"] > 1 for d in results["domains"])
  sched = results["schedules"]["2-0"]
  assert sched["mean"] == 1
  for domain, rows in sched["domains"].items():
    # Budget-exact along the schedule: 2 big layers in the first half, none in the second.
    np.testing.assert_allclose(rows["router_schedule"]["big_by_position"], [2] * 8 + [0] * 8)
    np.testing.assert_allclose(rows["router_constant"]["big_by_position"], 1)
    # The constant router is the budget-1 paper router; the constant oracle the study's.
    assert rows["router_constant"]["ppl"] == pytest.approx(
        results["budgets"]["1"]["paper"]["eval"][domain]["exact"]["ppl"], rel=1e-6)
    assert rows["oracle_constant"]["ppl"] == pytest.approx(
        oracle_results["domains"][domain]["budgets"]["1"]["oracle_ppl"], rel=1e-6)
    # Left to its argmax, the scheduled router's allocation (no budget enforced).
    argmax_T = np.array(rows["router_schedule_argmax"]["big_by_position"])
    assert argmax_T.shape == (16,) and np.all((argmax_T >= 0) & (argmax_T <= 3))
    for who in ("router_schedule", "oracle_schedule", "oracle_constant"):
      first, second = rows[who]["ppl_by_segment"]
      assert rows[who]["ppl"] == pytest.approx(math.sqrt(first * second), rel=1e-6)
  routers = np.load(tmp_path / "routers.npz")
  assert routers["paper_k1_kernel"].shape == (3, 32, 2)
  assert routers["imitation_k2_bias"].shape == (3, 2)
  assert routers["schedule_2-0_kernel"].shape == (3, 32, 2)
  assert np.load(tmp_path / "routes.npz")["shakespeare_paper_k1"].shape == (16, 3)
  # The figure script, as a user runs it, on these results.
  proc = subprocess.run([sys.executable, "-m", "experiments.router_figures",
                         f"--workdir={tmp_path}", f"--out_dir={tmp_path / 'figures'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for png in ("duo_fig3_7_router_allocation.png", "duo_fig4_router_budgets.png",
              "duo_fig4c_schedules.png", "duo_fig8_dense.png"):
    assert (tmp_path / "figures" / png).stat().st_size > 10_000, png


def test_budget_rate_agreement_by_hand():
  b, sm = 2, 1  # BIG, SMALL route ids
  assert study.budget_rate_agreement(np.array([[[b, sm, sm, sm]]]), 1) == pytest.approx(5 / 8)
  # Budget 0 and L: the rate router is always right on exact routes.
  assert study.budget_rate_agreement(np.full((2, 3, 4), sm), 0) == 1.0
  assert study.budget_rate_agreement(np.full((2, 3, 4), b), 4) == 1.0


def test_oracle_on_other_tokens_is_refused(stages, tmp_path):
  stage1, _, _ = stages
  oracle = _oracle(stage1, str(tmp_path / "oracle"), seq_len=8)
  with pytest.raises(ValueError, match="router.eval_sequences / router.seq_len"):
    run_router_study(_config(stage1, oracle), str(tmp_path / "router"))


def test_dense_baseline_widths():
  cfg = ModelConfig.from_dict(duo_small.get_config().model)
  # (k * 512 + (12 - k) * 32) / 12, by hand.
  assert [dense_baseline.equal_compute_width(cfg, k) for k in (0, 2, 4, 6, 8, 12)] == [
      32, 112, 192, 272, 352, 512]
  dense = dense_baseline.dense_config(duo_small.get_config(), 6)
  assert dense.model.duo is False and dense.model.d_ff_big == 272
  assert dense.data == duo_small.get_config().data and dense.train == duo_small.get_config().train
  with pytest.raises(ValueError, match=r"budget must be in \[0, 12\]"):
    dense_baseline.equal_compute_width(cfg, 13)


def test_entry_point_prints_the_table(stages, tmp_path):
  stage1, oracle, dense = stages
  overrides = [f"--config.router.{k}={v}" for k, v in SMALL.items() if k != "budgets"]
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.router", "--config=configs/router_small.py",
       f"--workdir={tmp_path}", f"--config.stage1_workdir={stage1}",
       f"--config.oracle_workdir={oracle}", f"--config.dense_workdir={dense}",
       "--config.router.budgets=(1,)", "--config.router.eval_domains=('shakespeare',)",
       *overrides], cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "shakespeare:" in proc.stdout and "all-big" in proc.stdout
  assert "schedule 2-0 vs constant 1" in proc.stdout
  assert list(json.loads((tmp_path / "results.json").read_text())["budgets"]) == ["1"]


def test_missing_stage1_names_the_command_to_run(tmp_path):
  config = router_small.get_config()
  config.stage1_workdir = str(tmp_path / "nothing_here")
  with pytest.raises(FileNotFoundError, match="python -m experiments.train_duo --config="):
    run_router_study(config, str(tmp_path / "router"))
