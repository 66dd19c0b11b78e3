"""The stage-2 study end to end on a tiny trained model: results, invariants, figures."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.routing import Route
from adaptive_jax.studies.oracle_study import OracleConfig, run_oracle_study
from adaptive_jax.train.step import cross_entropy
from adaptive_jax.train.trained import load_trained
from configs import duo_small, oracle_small

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _oracle_config(stage1_workdir):
  config = oracle_small.get_config()
  config.stage1_workdir = stage1_workdir
  o = config.oracle
  o.num_sequences, o.seq_len, o.chunk_sequences, o.split_depth = 4, 16, 2, 2
  o.budgets = (0, 1, 2, 3)
  o.sequential_sequences, o.sequential_seq_len, o.sequential_budgets = 2, 8, (0, 1, 3)
  o.skip_patterns, o.skip_sequences, o.text_budget = 40, 2, 1
  return config


def test_study_results_and_figures(stage1, tmp_path):
  workdir = tmp_path / "oracle"
  results = run_oracle_study(_oracle_config(stage1), str(workdir))
  assert json.loads((workdir / "results.json").read_text()) == json.loads(json.dumps(results))
  assert set(results["domains"]) == {"shakespeare", "python_stdlib"}
  for res in results["domains"].values():
    assert res["num_patterns"] == 8 and res["num_tokens"] == 4 * 16
    rows = res["budgets"]
    for k, row in rows.items():
      assert row["oracle_ppl"] <= row["fixed_ppl"] + 1e-9 <= row["random_best_ppl"] + 2e-9
      assert row["fixed_routes"].count("b") == int(k)
      assert abs(sum(row["oracle_big_by_layer"]) - int(k)) < 1e-6  # budgets are exact
    assert rows[0]["oracle_ppl"] == pytest.approx(res["all_small_ppl"], rel=1e-5)
    assert rows[3]["oracle_ppl"] == pytest.approx(res["all_big_ppl"], rel=1e-5)
    seq = res["sequential"]["budgets"]
    assert set(seq) == {0, 1, 3}
    # Budget 0 and L have one path each: the context-consistent and paper oracles coincide.
    for k in (0, 3):
      assert seq[k]["sequential_ppl"] == pytest.approx(seq[k]["oracle_ppl_same_tokens"], rel=1e-4)
    assert res["skip"]["num_patterns"] == 40
  tokens = np.load(workdir / "shakespeare_tokens.npz")
  assert tokens["loss_small"].shape == tokens["loss_oracle"].shape == (16,)
  # Brute force: the first sequence through the full model under each of the 3 patterns with
  # one big layer; per token, the oracle is their minimum.
  _, model_cfg, params = load_trained(stage1, train_command="unused")
  inputs_1xT, targets_1xT = tokens["inputs"][None], tokens["tokens"][None]
  loss = lambda route_L: np.asarray(cross_entropy(Transformer(model_cfg).apply(
      {"params": params}, inputs_1xT, route_BxTxL=np.broadcast_to(route_L, (1, 16, 3))),
      targets_1xT))[0]
  one_big_PxT = np.stack([loss(np.where(np.arange(3) == l, Route.BIG, Route.SMALL))
                          for l in range(3)])
  assert int(tokens["budget"]) == 1
  np.testing.assert_allclose(tokens["loss_oracle"], one_big_PxT.min(0), atol=1e-5)
  np.testing.assert_allclose(tokens["loss_small"], loss(np.full(3, Route.SMALL)), atol=1e-5)
  np.testing.assert_allclose(tokens["loss_big"], loss(np.full(3, Route.BIG)), atol=1e-5)
  out_dir = tmp_path / "figures"
  proc = subprocess.run([sys.executable, "-m", "experiments.oracle_figures",
                         f"--workdir={workdir}", f"--out_dir={out_dir}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert sorted(os.listdir(out_dir)) == [
      "duo_fig2_oracle_layers.png", "duo_fig4_budgets.png",
      "duo_fig5_6_tokens_python_stdlib.png", "duo_fig5_6_tokens_shakespeare.png"]


def test_missing_stage1_names_the_command_to_run(tmp_path):
  config = _oracle_config(str(tmp_path / "nothing_here"))
  with pytest.raises(FileNotFoundError, match="python -m experiments.train_duo --config="):
    run_oracle_study(config, str(tmp_path / "oracle"))


def test_oracle_small_config_fits_duo_small():
  cfg = OracleConfig(**oracle_small.get_config().oracle)
  model = duo_small.get_config().model
  cfg.validate_for(model.num_layers, model.max_len)
  assert cfg.budgets == tuple(range(model.num_layers + 1))


@pytest.mark.parametrize("field, value, message", [
    ("budgets", (0, 13), r"oracle.budgets entry must be in \[0, 12\]"),
    ("split_depth", 0, r"oracle.split_depth must be in \[1, 12\]"),
    ("seq_len", 4096, "oracle.seq_len"),
    ("skip_patterns", 1.5, "oracle.skip_patterns must be an integer >= 0, got 1.5"),
    ("random_patterns", True, "oracle.random_patterns must be an integer >= 1, got True"),
])
def test_bad_oracle_config_names_the_field(field, value, message):
  values = dict(oracle_small.get_config().oracle)
  values[field] = value
  model = duo_small.get_config().model
  with pytest.raises(ValueError, match=message):
    OracleConfig(**values).validate_for(model.num_layers, model.max_len)


def test_bad_chunking_names_the_field():
  values = dict(oracle_small.get_config().oracle)
  values["chunk_sequences"] = 3
  with pytest.raises(ValueError, match="oracle.num_sequences"):
    OracleConfig(**values)
