"""The stage-1 entry points as a user runs them: train_duo, then the figure script."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_train_duo_then_figure(tmp_path):
  workdir = tmp_path / "duo_tiny"
  out = _run("experiments.train_duo", "--config=configs/duo_tiny.py", f"--workdir={workdir}",
             f"--config.data.data_dir={tmp_path / 'data'}", "--config.train.num_steps=6",
             "--config.train.log_every=3", "--config.train.checkpoint_every=3")
  results = json.loads((workdir / "results.json").read_text())
  assert results["step"] == 6
  for policy in ("all_small", "random_p0.5", "all_big"):
    assert f"eval/ppl@{policy}" in results
    assert policy in out  # the printed table
  assert (workdir / "tensorboard").is_dir() and os.listdir(workdir / "tensorboard")
  png = tmp_path / "fig.png"
  _run("experiments.duo_figures", f"--workdir={workdir}", f"--out={png}")
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_script_names_the_missing_results(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.duo_figures",
                         f"--workdir={tmp_path}", f"--out={tmp_path / 'x.png'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "results.json not found" in proc.stderr
