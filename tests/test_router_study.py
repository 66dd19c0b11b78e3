"""The stage-3 study end to end on a tiny trained Duo model, in process and as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from adaptive_jax.router.study import run_router_study
from configs import router_small

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGETS = (1, 2)
# Shrinks router_small to seconds on one core (duo_tiny: 3 layers, max_len 32).
SMALL = {"budgets": BUDGETS, "num_steps": 20, "batch_size": 4, "train_sequences": 8,
         "seq_len": 16, "oracle_sequences": 2, "oracle_seq_len": 8, "eval_sequences": 2}


def test_study_results(stage1, tmp_path):
  config = router_small.get_config()
  config.stage1_workdir = stage1
  config.router.update(SMALL)
  results = run_router_study(config, str(tmp_path))
  assert json.loads((tmp_path / "results.json").read_text()) == results
  assert results["num_layers"] == 3 and results["train_tokens"] == 8 * 16
  assert set(results["domains"]) == {"shakespeare", "python_stdlib"}
  assert set(results["budgets"]) == {str(k) for k in BUDGETS}
  for k, row in results["budgets"].items():
    assert row["oracle_train_ppl"] > 1
    for name in ("paper", "imitation"):
      for domain, ev in row[name]["eval"].items():
        assert ev["exact"]["big_layers"] == int(k)  # budget-exact routing is exact
        assert abs(sum(ev["exact"]["big_by_layer"]) - int(k)) < 1e-6
        assert 0 <= ev["argmax"]["big_layers"] <= 3 and ev["argmax"]["skip_layers"] == 0
        assert np.isfinite(ev["argmax"]["ppl"]) and ev["argmax"]["ppl"] > 1
    assert 0 <= row["imitation"]["train"]["agreement"] <= 1
    assert row["paper"]["train"]["temperature"] < 1.0  # annealed
  routers = np.load(tmp_path / "routers.npz")
  assert routers["paper_k1_kernel"].shape == (3, 32, 2)
  assert routers["imitation_k2_bias"].shape == (3, 2)


def test_entry_point_prints_the_table(stage1, tmp_path):
  overrides = [f"--config.router.{k}={v}" for k, v in SMALL.items() if k != "budgets"]
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.router", "--config=configs/router_small.py",
       f"--workdir={tmp_path}", f"--config.stage1_workdir={stage1}",
       "--config.router.budgets=(1,)", "--config.router.eval_domains=('shakespeare',)",
       *overrides], cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "shakespeare:" in proc.stdout and "all-big" in proc.stdout
  assert list(json.loads((tmp_path / "results.json").read_text())["budgets"]) == ["1"]


def test_missing_stage1_names_the_command_to_run(tmp_path):
  config = router_small.get_config()
  config.stage1_workdir = str(tmp_path / "nothing_here")
  with pytest.raises(FileNotFoundError, match="python -m experiments.train_duo --config="):
    run_router_study(config, str(tmp_path / "router"))
