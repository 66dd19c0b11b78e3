"""Dense baselines of equal compute (paper Fig. 8): per budget k, a dense transformer whose one
FFN has the routed model's average FFN width, trained like stage 1 on the same tokens.

With k of L layers BIG and the rest SMALL, a token's FFN FLOPs are 6 D (k F_big + (L-k) F_small)
(`routing.FlopModel.ffn`), so the dense FFN of equal FLOPs has width

  F_dense(k) = (k F_big + (L - k) F_small) / L        rounded to the nearest integer;

duo_small (F_big 512, F_small 32, L 12): k=2 -> 112, k=4 -> 192, k=6 -> 272, k=8 -> 352.
The routers' own matmuls (D x 2 per layer, 4 D FLOPs: under one unit of width) are left out.
Everything else (data, seed, steps, learning-rate schedule, attention) is the stage-1
config's, so the dense model and the routed one saw the same batches in the same order.
"""

import copy
import json
import os

import ml_collections

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.train.loop import CONFIG_FILE, train_and_evaluate


def equal_compute_width(model_cfg: ModelConfig, budget: int) -> int:
  """The dense FFN width with the FLOPs of `budget` big and L - budget small FFNs per token."""
  L = model_cfg.num_layers
  k = routing.validate_budget(budget, num_layers=L, name="budget")
  return int(round((k * model_cfg.d_ff_big + (L - k) * model_cfg.d_ff_small) / L))


def dense_config(stage1_config: ml_collections.ConfigDict, budget: int) -> ml_collections.ConfigDict:
  """The stage-1 config with a dense model of equal compute at `budget` (see module doc)."""
  model_cfg = ModelConfig.from_dict(stage1_config.model)
  if not model_cfg.duo:
    raise ValueError("the dense baseline is sized from a Duo model: stage-1 model.duo must be True")
  config = copy.deepcopy(ml_collections.ConfigDict(stage1_config.to_dict()))
  config.model.duo = False
  config.model.d_ff_big = equal_compute_width(model_cfg, budget)
  return config  # the routing section is ignored by a dense model


def budget_workdir(workdir: str, budget: int) -> str:
  return os.path.join(workdir, f"k{int(budget)}")


def read_stage1_config(stage1_workdir: str, *, train_command: str) -> ml_collections.ConfigDict:
  """The config a stage-1 run recorded (its config.json), so the baselines see its batches."""
  path = os.path.join(stage1_workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no stage-1 run in {stage1_workdir} (need {CONFIG_FILE}). Start "
                            f"it first:\n  {train_command}")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def train_dense_baselines(stage1_config: ml_collections.ConfigDict, budgets, workdir: str) -> dict:
  """Trains (or resumes, or finds finished) one dense model per budget under workdir/k<budget>;
  returns {budget: stage-1 style results with 'd_ff'}."""
  results = {}
  for k in budgets:
    config = dense_config(stage1_config, k)
    results[int(k)] = {"d_ff": int(config.model.d_ff_big),
                       **train_and_evaluate(config, budget_workdir(workdir, k))}
  return results
