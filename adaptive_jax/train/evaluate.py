"""Held-out perplexity of a Duo model under fixed routing policies."""

import jax
import numpy as np

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.perplexity import perplexity
from adaptive_jax.train import mesh as mesh_lib
from adaptive_jax.train.config import PerplexityEvalConfig
from adaptive_jax.train.step import eval_loss_sum


def routing_policies(model_cfg: ModelConfig, eval_cfg: PerplexityEvalConfig):
  """name -> fn(key, shape) giving route_BxTxL; a dense model has the single policy 'dense'."""
  if not model_cfg.duo:
    return {"dense": lambda key, shape: None}
  return {
      "all_small": lambda key, shape: routing.constant_routes(shape, routing.Route.SMALL),
      f"random_p{eval_cfg.p_big:g}": lambda key, shape: routing.random_routes(
          key, shape, p_big=eval_cfg.p_big),
      "all_big": lambda key, shape: routing.constant_routes(shape, routing.Route.BIG),
  }


def evaluate(params, apply_fn, batches, model_cfg: ModelConfig, eval_cfg: PerplexityEvalConfig,
             mesh) -> dict[str, float]:
  """{'eval/loss@<policy>': mean token loss, 'eval/ppl@<policy>': exp of it} per policy."""
  results = {}
  for name, policy in routing_policies(model_cfg, eval_cfg).items():
    total, count = 0.0, 0
    for i, host_batch in enumerate(batches):
      batch = mesh_lib.replicated_batch(host_batch, mesh)  # every process holds it whole
      shape = (*host_batch["inputs"].shape, model_cfg.num_layers)
      route_BxTxL = policy(jax.random.fold_in(jax.random.key(eval_cfg.seed), i), shape)
      with jax.set_mesh(mesh):
        loss_sum, n = eval_loss_sum(params, batch, route_BxTxL, apply_fn=apply_fn)
      total += float(np.asarray(loss_sum))
      count += int(n)
    results[f"eval/loss@{name}"] = total / count
    results[f"eval/ppl@{name}"] = perplexity(total, count)
  return results
