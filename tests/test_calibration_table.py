"""The calibration Brier table, on a hand-made results dict and on the committed run."""

import json
import pathlib

import pytest

from adaptive_jax.figures import calibration_table

REPO = pathlib.Path(__file__).resolve().parents[1]


def _results():
  method = lambda brier, ece, mean: {"brier": brier, "ece": ece, "mean_prediction": mean}
  return {
      "num_records": {"test": 10, "calibration": 40, "validation": 12},
      "selection": {"estimate": "calibrated",
                    "chosen": {"calibration_learning_rate": 0.003, "calibration_batch_size": 32}},
      "methods": {"base": method(0.2, 0.25, 0.5), "calibrated": method(0.1, 0.05, 0.31),
                  "quantile_median": method(0.12, 0.1, 0.2), "temperature": method(0.19, 0.2, 0.5),
                  "isotonic": method(0.11, 0.03, 0.3), "histogram": method(0.13, 0.04, 0.29)},
      "brier_ratio_to_base": {name: {"ratio": r, "low": r - 0.1, "high": r + 0.1} for name, r in
                              (("calibrated", 0.5), ("quantile_median", 0.6),
                               ("temperature", 0.95), ("isotonic", 0.55), ("histogram", 0.65))},
      "reference": {"difficulty": {"brier": 0.09, "ratio_to_base": 0.45},
                    "mc_noise_floor": {"brier": 0.01, "ratio_to_base": 0.05}},
      "coverage": {"lower_q0.1_conformal": 0.91, "lower_q0.1_conformal_questions": 0.875,
                   "conformal_nominal": 0.9, "lower_q0.1_raw": 0.4},
  }


def test_rows_by_hand():
  table = calibration_table.brier_table(_results())
  lines = table.splitlines()
  assert lines[0] == ("10 test records (40 calibration, 12 validation); chosen on validation: "
                      "the `calibrated` estimate, calibration learning rate 0.003, batch 32.")
  assert "| base PRM (outcome labels, easier questions) | 0.200 | 1 | 0.250 | 0.50 |" in lines
  assert "| calibrated mean (squared-error fine-tune) | 0.100 | 0.50x [0.40, 0.60] | 0.050 | 0.31 |" \
      in lines
  assert "| reference: the mean target of the record's difficulty | 0.090 | 0.45x | | |" in lines
  # A reference the run did not compute is left out, not printed empty.
  assert not any("gold steps" in line for line in lines)
  assert lines[-1] == ("Split-conformal lower 0.1 quantile: one-sided coverage 0.91 of test "
                       "records, 0.88 of test questions (nominal 0.90; uncorrected 0.40).")
  assert sum(line.startswith("| ") for line in lines) == 2 + 6 + 2  # header, rule, rows


def test_a_missing_method_names_itself():
  results = _results()
  del results["methods"]["isotonic"]
  with pytest.raises(KeyError, match="isotonic"):
    calibration_table.brier_table(results)


def test_committed_run_renders_its_ratio():
  results = json.loads((REPO / "docs/results/calibrate_ias/results.json").read_text())
  table = calibration_table.render(results)["brier"]
  ratio = results["brier_ratio_to_base"]["calibrated"]
  assert f"{ratio['ratio']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}]" in table
  assert table in (REPO / "docs/calibrated_prm.md").read_text()
