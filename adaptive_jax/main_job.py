"""The main job: both papers' stages in order, then every figure and the claims table.

  [1/8] duo        Duo-LLM stage 1, random-routing training  train.loop.train_and_evaluate
  [2/8] oracle     Duo-LLM stage 2, oracle routing (on duo)  studies.oracle_study
  [3/8] router     Duo-LLM stage 3, learned routers (and     studies.router_study
                   dense baselines unless router.dense_workdir is "")
  [4/8] policy     the reasoning policy                      policy.train.train_policy
  [5/8] calibrate  MC labels, base and calibrated PRMs       studies.calibration_study
  [6/8] ias        instance-adaptive sampling                studies.ias_study
  [7/8] label_free the label-free loop (TAO-style)           studies.label_free_study
  [8/8] figures    the six experiments.*_figures scripts

`config` has one section per stage (configs/quick.py); each stage works in `<workdir>/<name>/`,
and the upstream-workdir fields of the later stages are pointed at those folders. A stage is
skipped when it finished before: its own results files are there (a training stage's
checkpoint must also be at train.num_steps: `load_trained`), it ran with the same config
section as now (recorded in RECORD once the stage returned) and no stage it reads ran again.
Unless `verbose`, a stage's own output goes to LOG in its folder and stdout gets one line as
it starts and one as it ends.
"""

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from typing import Callable

import jax
import ml_collections
from absl import logging as absl_logging

from adaptive_jax import atomic_file
from adaptive_jax.claims import claims_table
from adaptive_jax.policy.train import train_policy
from adaptive_jax.router import dense_baseline
from adaptive_jax.studies.calibration_study import run_calibration_study
from adaptive_jax.studies.ias_study import run_ias_study
from adaptive_jax.studies.label_free_study import run_label_free_study
from adaptive_jax.studies.oracle_study import run_oracle_study
from adaptive_jax.studies.router_study import run_router_study
from adaptive_jax.train.loop import train_and_evaluate
from adaptive_jax.train.trained import load_trained

RECORD = "main_job_config.json"  # the config section a finished stage ran with
LOG = "main_job.log"
# Python loggers of the libraries the stages run (absl's also carries orbax's and grain's).
LOGGERS = ("absl", "orbax", "grain", "jax", "tensorflow_datasets")
RERUN = "python -m experiments.main"


def set_verbosity(verbose: bool) -> None:
  """INFO from absl and the libraries' loggers when `verbose`, else WARNING and above only."""
  absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
  for name in LOGGERS:
    logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def _figure_scripts(configs: dict, dirs: dict) -> list[tuple[list[str], list[str]]]:
  """(arguments of `python -m`, the PNGs it writes) of each figure script."""
  out = dirs["figures"]
  domains = configs["oracle"].oracle.domains
  return [
      (["experiments.duo_figures", f"--workdir={dirs['duo']}",
        f"--out={os.path.join(out, 'duo_stage1.png')}"], ["duo_stage1.png"]),
      (["experiments.oracle_figures", f"--workdir={dirs['oracle']}", f"--out_dir={out}"],
       ["duo_fig2_oracle_layers.png", "duo_fig4_budgets.png"]
       + [f"duo_fig5_6_tokens_{d}.png" for d in domains]),
      (["experiments.router_figures", f"--workdir={dirs['router']}", f"--out_dir={out}"],
       ["duo_fig3_7_router_allocation.png", "duo_fig4_router_budgets.png", "duo_fig8_dense.png"]
       + (["duo_fig4c_schedules.png"] if configs["router"].router.schedules else [])),
      (["experiments.calibrate_figures", f"--workdir={dirs['calibrate']}", f"--out_dir={out}"],
       ["prm_reliability.png", "prm_brier_by_difficulty.png"]),
      # It also writes ias_beam.png when the study ran beam search.
      (["experiments.ias_figures", f"--workdir={dirs['ias']}", f"--out_dir={out}"],
       ["ias_accuracy_vs_flops.png", "ias_samples_vs_difficulty.png"]),
      (["experiments.label_free_figures", f"--workdir={dirs['label_free']}", f"--out_dir={out}"],
       ["label_free_rounds.png"]),
  ]


def _run_figures(configs: dict, dirs: dict) -> None:
  """Each figure script in its own process, as a user runs it (a figure never retrains)."""
  for args, _ in _figure_scripts(configs, dirs):
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    print(proc.stdout, end="")
    if proc.returncode:
      raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def _run_router(configs: dict, dirs: dict):
  """Dense baselines of equal compute (when configured), then the router study."""
  config = configs["router"]
  if config.dense_workdir:
    stage1_config, _, _ = load_trained(dirs["duo"], train_command=RERUN)
    dense_baseline.train_dense_baselines(stage1_config, config.router.budgets,
                                         config.dense_workdir)
  return run_router_study(config, dirs["router"])


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  title: str
  needs: tuple[str, ...]  # stages whose outputs it reads
  run: Callable[[dict, dict], object]  # (stage configs, stage folders)
  outputs: Callable[[dict, dict], list[str]]  # files in its folder a finished run leaves
  trained: bool = False  # a training run: its checkpoint must be at train.num_steps
  fresh: tuple[str, ...] = ()  # subfolders cleared when it reruns for a change upstream


STAGES = (
    Stage("duo", "Duo-LLM stage 1", (), lambda c, d: train_and_evaluate(c["duo"], d["duo"]),
          lambda c, d: ["results.json"], trained=True),
    Stage("oracle", "Duo-LLM stage 2 oracle", ("duo",),
          lambda c, d: run_oracle_study(c["oracle"], d["oracle"]),
          lambda c, d: ["results.json"] + [f"{x}_{kind}.npz" for x in c["oracle"].oracle.domains
                                           for kind in ("tokens", "oracle")]),
    Stage("router", "Duo-LLM stage 3 routers", ("duo", "oracle"), _run_router,
          lambda c, d: ["results.json", "routers.npz", "routes.npz"]),
    Stage("policy", "reasoning policy", (), lambda c, d: train_policy(c["policy"], d["policy"]),
          lambda c, d: ["results.json"], trained=True),
    Stage("calibrate", "MC labels + calibrated PRM", ("policy",),
          lambda c, d: run_calibration_study(c["calibrate"], d["calibrate"]),
          lambda c, d: ["results.json", "predictions.npz"]),
    Stage("ias", "IAS study", ("policy", "calibrate"),
          lambda c, d: run_ias_study(c["ias"], d["ias"]),
          lambda c, d: ["results.json", os.path.join("pools", "test.npz")], fresh=("pools",)),
    Stage("label_free", "label-free loop", ("policy", "calibrate"),
          lambda c, d: run_label_free_study(c["label_free"], d["label_free"]),
          lambda c, d: ["results.json"], fresh=("rounds",)),
    Stage("figures", "figure scripts",
          ("duo", "oracle", "router", "calibrate", "ias", "label_free"),
          _run_figures,
          lambda c, d: [png for _, pngs in _figure_scripts(c, d) for png in pngs]),
)


def stage_configs(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict, dict]:
  """(configs, folders) per stage; the later stages read the earlier stages' folders."""
  dirs = {stage.name: os.path.join(workdir, stage.name) for stage in STAGES}
  configs = {name: ml_collections.ConfigDict(config[name].to_dict())
             for name in ("duo", "oracle", "router", "policy", "calibrate", "ias", "label_free")}
  configs["figures"] = ml_collections.ConfigDict()
  configs["oracle"].stage1_workdir = dirs["duo"]
  configs["router"].stage1_workdir = dirs["duo"]
  configs["router"].oracle_workdir = dirs["oracle"]
  configs["router"].dense_workdir = (os.path.join(dirs["router"], "dense")
                                     if config.router.dense_workdir else "")
  configs["calibrate"].policy_workdir = dirs["policy"]
  configs["ias"].policy_workdir = dirs["policy"]
  configs["ias"].calibrate_workdir = dirs["calibrate"]
  configs["label_free"].policy_workdir = dirs["policy"]
  configs["label_free"].calibrate_workdir = dirs["calibrate"]
  return configs, dirs


def _record(config: ml_collections.ConfigDict, name: str):
  """The section as JSON values, as the user gave it (before the folders are filled in)."""
  return json.loads(config[name].to_json()) if name in config else {}


def _finished(stage: Stage, configs: dict, dirs: dict, record) -> str | None:
  """Why the stage must run, or None when it finished with this config."""
  folder = dirs[stage.name]
  missing = [f for f in stage.outputs(configs, dirs) if not os.path.exists(os.path.join(folder, f))]
  if missing:
    return f"no {missing[0]} yet"
  path = os.path.join(folder, RECORD)
  if not os.path.exists(path):
    return f"no {RECORD}: not finished by the main job"
  with open(path) as f:
    if json.load(f) != record:
      return "its config section changed since it finished"
  if stage.trained:
    try:
      load_trained(folder, train_command=RERUN)
    except (FileNotFoundError, ValueError) as e:
      return f"no finished checkpoint ({str(e).splitlines()[0]})"
  return None


def _duration(seconds: float) -> str:
  """9m12s; 45s; 1h02m."""
  s = int(round(seconds))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{s // 60 % 60:02d}m"


def _load_results(folder: str):
  path = os.path.join(folder, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def run_main(config: ml_collections.ConfigDict, workdir: str, *, verbose: bool = False) -> dict:
  """Runs (or skips) every stage, prints a line per stage and the claims table.

  Returns {'status': {stage: 'ran' | 'skipped'}, 'results': {stage: its results.json or None},
  'table': the claims table}.
  """
  configs, dirs = stage_configs(config, workdir)
  minutes = config.get("minutes", {})
  start, status = time.time(), {}
  print(f"main job: {len(STAGES)} stages in {workdir}", flush=True)
  for i, stage in enumerate(STAGES, 1):
    head = f"[{i}/{len(STAGES)}] {stage.name} ({stage.title})"
    folder, record = dirs[stage.name], _record(config, stage.name)
    reran = [name for name in stage.needs if status.get(name) == "ran"]
    why = _finished(stage, configs, dirs, record)
    if why is None and reran:
      why = f"{reran[0]} ran again"
    if why is None:
      status[stage.name] = "skipped"
      print(f"{head}: skipped, finished before in {folder}", flush=True)
      continue
    if stage.fresh and not why.startswith("no "):
      # What it drew for other inputs must not be resumed (a kill mid-stage keeps them).
      for name in stage.fresh:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    estimate = minutes.get(stage.name, -1)
    about = f"about {estimate} min (estimate), " if estimate >= 0 else ""
    log = os.path.join(folder, LOG)
    print(f"{head}: running ({why}); {about}"
          f"{'output below' if verbose else 'its output: ' + log}", flush=True)
    tick = time.time()
    try:
      with contextlib.ExitStack() as stack:
        if not verbose:
          out = stack.enter_context(open(log, "a"))
          stack.enter_context(contextlib.redirect_stdout(out))
          stack.enter_context(contextlib.redirect_stderr(out))
        stage.run(configs, dirs)
    except BaseException:
      print(f"{head}: failed after {_duration(time.time() - tick)}"
            + ("" if verbose else f"; its output: {log}"), flush=True)
      raise
    # The next stage reuses none of this stage's compiled programs, and each one keeps its
    # memory maps: one process running every stage would otherwise near vm.max_map_count.
    jax.clear_caches()
    atomic_file.write_json(os.path.join(folder, RECORD), record)
    status[stage.name] = "ran"
    print(f"{head}: done in {_duration(time.time() - tick)}", flush=True)
  results = {name: _load_results(dirs[name]) for name in ("duo", "oracle", "router", "policy",
                                                          "calibrate", "ias", "label_free")}
  table = claims_table(results)
  print(f"\nall stages finished in {_duration(time.time() - start)}; figures in "
        f"{dirs['figures']}\n\n{table}", flush=True)
  return {"status": status, "results": results, "table": table}
