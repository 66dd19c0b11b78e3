"""IAS figures from a hand-written results.json: every PNG, the plotted data, the entry point."""

import copy
import json
import os
import pathlib
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from adaptive_jax.figures import ias

REPO = pathlib.Path(__file__).resolve().parents[1]
DIFFICULTIES = range(1, 9)
METHODS = ("ias", "offline", "online", "adaptive_consistency", "deepconf_low", "deepconf_high",
           "probe_confidence", "probe_combined")


def _entry(accuracy, samples, flops, samples_by_difficulty=None):
  return {"accuracy": accuracy, "accuracy_interval": [accuracy - 0.05, accuracy + 0.04],
          "samples": samples, "policy_tokens": 90.0 * samples, "prm_tokens": 10.0 * samples,
          "flops": flops,
          "accuracy_by_difficulty": {str(d): accuracy - 0.02 * d for d in DIFFICULTIES},
          "samples_by_difficulty": samples_by_difficulty or {str(d): samples
                                                             for d in DIFFICULTIES}}


def _results(aggregation="calibrated_vote"):
  fixed = {str(n): {name: _entry(0.3 + 0.1 * k + 0.01 * (name == aggregation), n,
                                 1e9 * n * (1.2 if name != "majority" else 1.0))
                    for name in ("majority", "calibrated_vote", "base_last")}
           for k, n in enumerate((1, 2, 4))}
  methods = {}
  for i, name in enumerate(METHODS):
    # IAS spends more on hard questions; the others spread evenly.
    by = {str(d): (1 + 3 * d / 8 if name in ias.ALLOCATION else 2.0)
          for d in DIFFICULTIES}
    methods[name] = _entry(0.4 + 0.02 * i, float(np.mean(list(by.values()))), 2e9 + 1e8 * i, by)
    methods[name].update(matched={"ratio": 0.8, "interval": [0.6, 1.1], "above_curve": False},
                         matched_to="fixed_majority")
  return {"aggregation": aggregation, "num_questions": {"validation": 64, "test": 128},
          "test": {"fixed": fixed, "methods": methods},
          "success_rate_by_difficulty": {str(d): 1 - d / 9 for d in DIFFICULTIES}}


def _with_beam(results, nested_in_test):
  results = copy.deepcopy(results)
  variants = {"fixed_K1_M4": _entry(0.4, 4, 3e9), "fixed_K2_M4": _entry(0.5, 8, 6e9),
              "ias_of_k": _entry(0.48, 5, 4e9), "ias_of_m": _entry(0.47, 6, 4.5e9)}
  if nested_in_test:
    results["test"]["beam"] = variants
  else:  # as run_ias_study writes it
    results["beam"] = {"questions": 64, "variants": variants}
  return results


def _png(path):
  assert os.path.getsize(path) > 0
  image = matplotlib.image.imread(path)
  assert image.shape[0] > 200 and image.shape[1] > 300


@pytest.fixture
def figures(monkeypatch):
  """Each figure drawn, keyed by the file it was saved to (saved as well)."""
  drawn, save = {}, ias._save

  def keep(fig, path):
    drawn[os.path.basename(path)] = [(ax, [l.get_text() for l in ax.get_legend().get_texts()]
                                      if ax.get_legend() else []) for ax in fig.axes]
    save(fig, path)
  monkeypatch.setattr(ias, "_save", keep)
  return drawn


def test_accuracy_vs_flops_plots_both_sweeps_and_every_method(figures, tmp_path):
  results = _results()
  ias.accuracy_vs_flops(results, str(tmp_path / "acc.png"))
  _png(tmp_path / "acc.png")
  [(ax, legend)] = figures["acc.png"]
  assert legend[:2] == ["fixed N (calibrated_vote)", "self-consistency (fixed N, majority)"]
  assert legend[2:] == [ias.LABELS[name] for name in METHODS]
  sweep, majority = ax.lines[:2]
  np.testing.assert_allclose(sweep.get_xdata(), [1.2e9, 2.4e9, 4.8e9])
  np.testing.assert_allclose(sweep.get_ydata(), [0.31, 0.41, 0.51])
  np.testing.assert_allclose(majority.get_xdata(), [1e9, 2e9, 4e9])
  assert ax.get_xscale() == "log"


def test_majority_chosen_draws_one_sweep(figures, tmp_path):
  ias.accuracy_vs_flops(_results("majority"), str(tmp_path / "acc.png"))
  [(_, legend)] = figures["acc.png"]
  assert [l for l in legend if "fixed N" in l] == ["fixed N (majority) = self-consistency"]


def test_samples_vs_difficulty_follows_the_allocation(figures, tmp_path):
  results = _results()
  ias.samples_vs_difficulty(results, str(tmp_path / "samples.png"))
  _png(tmp_path / "samples.png")
  (left, legend), (right, _) = figures["samples.png"]
  assert legend == [ias.LABELS[n] for n in ias.ALLOCATION] + ["largest fixed N (4)"]
  first = left.lines[0]
  np.testing.assert_array_equal(np.round(first.get_xdata()), np.arange(1, 9))  # nudged
  np.testing.assert_allclose(first.get_ydata(), [1 + 3 * d / 8 for d in DIFFICULTIES])
  np.testing.assert_allclose([p.get_height() for p in right.patches],
                             [1 - d / 9 for d in DIFFICULTIES])


@pytest.mark.parametrize("nested_in_test", [True, False])
def test_beam_figure_only_with_a_beam_section(figures, tmp_path, nested_in_test):
  assert not ias.beam_accuracy_vs_budget(_results(), str(tmp_path / "none.png"))
  assert not (tmp_path / "none.png").exists()
  assert ias.beam_accuracy_vs_budget(_with_beam(_results(), nested_in_test),
                                     str(tmp_path / "beam.png"))
  _png(tmp_path / "beam.png")
  [(ax, legend)] = figures["beam.png"]
  assert legend[0] == "fixed beam search" and len(legend) == 3
  np.testing.assert_allclose(ax.lines[0].get_xdata(), [3e9, 6e9])


def test_entry_point_writes_every_png(tmp_path):
  workdir = tmp_path / "ias"
  workdir.mkdir()
  (workdir / "results.json").write_text(json.dumps(_with_beam(_results(), False)))
  proc = subprocess.run([sys.executable, "-m", "experiments.ias_figures", f"--workdir={workdir}",
                         f"--out_dir={tmp_path / 'figs'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  names = ["ias_accuracy_vs_flops.png", "ias_beam.png", "ias_samples_vs_difficulty.png"]
  assert sorted(os.listdir(tmp_path / "figs")) == names
  for name in names:
    _png(tmp_path / "figs" / name)


def test_coverage_figure_plots_fixed_curve_and_methods_only_with_coverage(figures, tmp_path):
  results = _results()
  assert not ias.coverage_vs_samples(results, str(tmp_path / "none.png"))
  assert not (tmp_path / "none.png").exists()
  for k, n in enumerate(("1", "2", "4")):
    for entry in results["test"]["fixed"][n].values():
      entry["coverage"] = 0.4 + 0.1 * k
  for i, m in enumerate(results["test"]["methods"].values()):
    m["coverage"] = 0.45 + 0.01 * i
  assert ias.coverage_vs_samples(results, str(tmp_path / "coverage.png"))
  [(ax, legend)] = figures["coverage.png"]
  assert legend[0] == "fixed N"
  np.testing.assert_allclose(ax.lines[0].get_xdata(), [1, 2, 4])
  np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.4, 0.5, 0.6])
  assert len(ax.lines) == 1 + len(results["test"]["methods"])
  assert ax.lines[1].get_ydata()[0] == pytest.approx(0.45)
