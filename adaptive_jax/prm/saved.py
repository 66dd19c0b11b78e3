"""The calibration study's PRMs on disk: orbax params plus the model they belong to.

`workdir/prm/<name>/params` (orbax StandardCheckpointer) and `workdir/prm/<name>/prm.json`
(`model`: the ModelConfig fields, `levels`: the quantile levels, () for a base PRM).
"""

import dataclasses
import json
import os

import jax
import orbax.checkpoint as ocp

from adaptive_jax import atomic_file
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.prm import fit

NAMES = ("base", "calibrated", "step_verifier")


def save_prm(workdir: str, name: str, params, model_cfg: ModelConfig, levels=()) -> None:
  if name not in NAMES:
    raise ValueError(f"name must be one of {NAMES}, got {name!r}")
  folder = os.path.abspath(os.path.join(workdir, "prm", name))
  os.makedirs(folder, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(folder, "params"), params, force=True)
  atomic_file.write_json(os.path.join(folder, "prm.json"),
                         {"model": dataclasses.asdict(model_cfg), "levels": list(levels)})


def load_prm(workdir: str, name: str, *, command: str):
  """(params, model_cfg, levels) of a saved PRM; FileNotFoundError naming `command` if absent."""
  folder = os.path.abspath(os.path.join(workdir, "prm", name))
  meta_path = os.path.join(folder, "prm.json")
  if not os.path.exists(meta_path) or not os.path.isdir(os.path.join(folder, "params")):
    raise FileNotFoundError(f"no saved {name} PRM in {workdir} (need {meta_path} and params/). "
                            f"Run the calibration study first:\n  {command}")
  with open(meta_path) as f:
    meta = json.load(f)
  model_cfg = ModelConfig.from_dict(meta["model"])
  levels = tuple(meta["levels"])
  target = jax.eval_shape(lambda: fit.init_params(model_cfg, len(levels), 8, seed=0))
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      params = checkpointer.restore(os.path.join(folder, "params"), target)
  except Exception as error:  # orbax raises many types; name the path either way
    raise ValueError(f"could not restore the {name} PRM from {folder}/params: {error}") from error
  return params, model_cfg, levels
