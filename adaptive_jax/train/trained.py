"""Loads a finished training run (its config and params) for the later stages."""

import json
import os

import ml_collections

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.train import checkpoint as ckpt_lib
from adaptive_jax.train import mesh as mesh_lib
from adaptive_jax.train import state as state_lib
from adaptive_jax.train.config import RoutingConfig, TrainConfig
from adaptive_jax.train.loop import CONFIG_FILE


def load_trained(workdir: str, *, train_command: str):
  """(config, model_cfg, params) of a finished training run.

  Works for any run that wrote `config.json` with `model`, `train` (and optionally `routing`)
  sections beside its checkpoints: train_duo and train_policy. The run is finished when its
  newest checkpoint is at its `train.num_steps`. `train_command` is shown in the error when the
  workdir holds no finished run: running it again trains or resumes the run to the end.
  """
  config_path = os.path.join(workdir, CONFIG_FILE)
  step = ckpt_lib.latest_step(workdir) if os.path.exists(config_path) else None
  if step is None:
    raise FileNotFoundError(f"no trained model in {workdir} (need {CONFIG_FILE} and a "
                            f"checkpoint). Train it first:\n  {train_command}")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  model_cfg = ModelConfig.from_dict(config.model)
  train_cfg = TrainConfig.from_dict(config.train)
  routing_cfg = RoutingConfig.from_dict(config.get("routing", {}))
  if step < train_cfg.num_steps:
    raise ValueError(f"{workdir} holds an unfinished run: its newest checkpoint is step {step} "
                     f"of train.num_steps={train_cfg.num_steps}. Finish it by running its "
                     f"training command again (it resumes from step {step}):\n  {train_command}")
  if step > train_cfg.num_steps:
    raise ValueError(f"{workdir}: the newest checkpoint is step {step}, past the "
                     f"train.num_steps={train_cfg.num_steps} its {CONFIG_FILE} records. Run its "
                     f"training command with --config.train.num_steps={step} to record the "
                     f"steps it ran:\n  {train_command}")
  mesh = mesh_lib.make_mesh((-1, 1))
  # The optimizer state's structure depends on the routing config (freeze_big_after), so the
  # restore target is built from the run's own sections.
  _, abstract_state = state_lib.sharded_state_init(model_cfg, train_cfg, routing_cfg, mesh,
                                                   seq_len=8)
  with ckpt_lib.make_manager(workdir, max_to_keep=1) as manager:
    params = ckpt_lib.restore_params(manager, abstract_state)
  return config, model_cfg, params
