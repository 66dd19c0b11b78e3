"""Loads a finished training run (its config and params) for the later stages."""

import json
import os

import ml_collections

from adaptive_jax.train import checkpoint as ckpt_lib
from adaptive_jax.train import mesh as mesh_lib
from adaptive_jax.train import state as state_lib
from adaptive_jax.train.loop import CONFIG_FILE, typed_configs


def load_trained(workdir: str, *, train_command: str):
  """(config, model_cfg, data_cfg, params) of the newest checkpoint in a train_duo workdir.

  `train_command` is shown in the error when the workdir holds no finished run.
  """
  config_path = os.path.join(workdir, CONFIG_FILE)
  manager = ckpt_lib.make_manager(workdir, max_to_keep=1) if os.path.exists(config_path) else None
  if manager is None or manager.latest_step() is None:
    raise FileNotFoundError(f"no trained model in {workdir} (need {CONFIG_FILE} and a "
                            f"checkpoint). Train it first:\n  {train_command}")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  model_cfg, data_cfg, routing_cfg, train_cfg, _ = typed_configs(config)
  mesh = mesh_lib.make_mesh((-1, 1))
  _, abstract_state = state_lib.sharded_state_init(model_cfg, train_cfg, routing_cfg, mesh,
                                                   data_cfg.seq_len)
  params = ckpt_lib.restore_params(manager, abstract_state)
  manager.close()
  return config, model_cfg, data_cfg, params
