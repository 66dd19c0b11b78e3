"""Stage-3 study: per budget, the paper's router and an oracle-imitating router on a frozen Duo.

Both learn from the first `train_sequences` sequences of the stage-1 corpus's training split;
the imitation router from the context-consistent sequential oracle's routes on the first
`oracle_sequences` x `oracle_seq_len` of them. Each is evaluated on held-out text per domain
under argmax routing (reporting the budget it realizes) and under budget-exact routing.
"""

import dataclasses
import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from adaptive_jax import data as data_lib
from adaptive_jax import routing
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.oracle import sequential
from adaptive_jax.router import train as router_train
from adaptive_jax.router.train import RouterConfig
from adaptive_jax.train.step import cross_entropy
from adaptive_jax.train.trained import load_trained


def _sequences(data_cfg, tokenizer, domain, split, num, seq_len):
  """The first `num` packed sequences of a domain's split (None: its held-out split), in file
  order: (tokens, targets)."""
  cfg = dataclasses.replace(data_cfg, name=domain, seq_len=seq_len, batch_size=num)
  data_lib.prepare_dataset(cfg)
  (batch,) = data_lib.make_eval_batches(cfg, tokenizer, split=split, num_batches=1)
  return batch["inputs"], batch["targets"]


@functools.partial(jax.jit, static_argnames=("cfg", "route"))
def _constant_route_loss(params, tokens_BxT, targets_BxT, *, cfg, route):
  route_BxTxL = routing.constant_routes((*tokens_BxT.shape, cfg.num_layers), route)
  logits_BxTxV = Transformer(cfg).apply({"params": params}, tokens_BxT, route_BxTxL=route_BxTxL)
  return jnp.mean(cross_entropy(logits_BxTxV, targets_BxT))


def _evaluate(params, router_params, model_cfg, held_out, budget) -> dict:
  """Per domain: argmax routing (realized budget) and budget-exact routing."""
  return {domain: {"argmax": router_train.evaluate_router(params, router_params, model_cfg, *xy),
                   "exact": router_train.evaluate_router(params, router_params, model_cfg, *xy,
                                                         budget=budget)}
          for domain, xy in held_out.items()}


def _final(history: dict) -> dict:
  """Mean of each metric over the last tenth of the steps (at least one)."""
  n = max(1, len(next(iter(history.values()))) // 10)
  return {k.split("/")[-1]: float(np.mean(v[-n:])) for k, v in history.items()}


def run_router_study(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates both routers per budget; writes results.json and routers.npz."""
  cfg = RouterConfig.from_dict(config.router)
  train_command = (f"python -m experiments.train_duo --config={config.stage1_config} "
                   f"--workdir={config.stage1_workdir}")
  stage1_config, model_cfg, params = load_trained(config.stage1_workdir,
                                                  train_command=train_command)
  cfg.validate_for(model_cfg.num_layers, model_cfg.max_len)
  data_cfg = data_lib.DataConfig(**stage1_config.data)
  tokenizer = data_lib.prepare(data_cfg)
  tokens_NxT, targets_NxT = _sequences(data_cfg, tokenizer, data_cfg.name, "train",
                                       cfg.train_sequences, cfg.seq_len)
  held_out = {d: _sequences(data_cfg, tokenizer, d, None, cfg.eval_sequences, cfg.seq_len)
              for d in cfg.eval_domains}
  os.makedirs(workdir, exist_ok=True)
  results = {"stage1_workdir": config.stage1_workdir, "num_layers": model_cfg.num_layers,
             "train_tokens": int(tokens_NxT.size), "domains": {}, "budgets": {}}
  for domain, (x, y) in held_out.items():
    results["domains"][domain] = {
        "num_tokens": int(x.size),
        **{f"all_{r.name.lower()}_ppl": math.exp(float(_constant_route_loss(
            params, x, y, cfg=model_cfg, route=r))) for r in (routing.Route.SMALL,
                                                              routing.Route.BIG)}}

  s, t = cfg.oracle_sequences, cfg.oracle_seq_len
  oracle_route_KxBxTxL, oracle_loss_KxBxT = map(np.asarray, sequential.sequential_oracle(
      params, model_cfg, tokens_NxT[:s, :t], targets_NxT[:s, :t], cfg.budgets))
  logging.info("sequential oracle routes done on %d x %d tokens", s, t)
  imitation_cfg = dataclasses.replace(cfg, with_skip=False)  # the oracle takes no SKIP
  saved = {}
  for i, k in enumerate(cfg.budgets):
    key = jax.random.fold_in(jax.random.key(cfg.seed), k)
    paper, paper_history = router_train.train_paper_router(
        params, model_cfg, cfg, tokens_NxT, targets_NxT, budget=k, key=jax.random.fold_in(key, 0))
    imitation, imitation_history = router_train.train_imitation_router(
        params, model_cfg, imitation_cfg, tokens_NxT[:s, :t], oracle_route_KxBxTxL[i],
        key=jax.random.fold_in(key, 1))
    results["budgets"][str(k)] = {
        "oracle_train_ppl": math.exp(float(oracle_loss_KxBxT[i].mean())),
        "paper": {"train": _final(paper_history),
                  "eval": _evaluate(params, paper, model_cfg, held_out, k)},
        "imitation": {"train": _final(imitation_history),
                      "eval": _evaluate(params, imitation, model_cfg, held_out, k)}}
    logging.info("budget %d: %s", k, results["budgets"][str(k)])
    for name, router_params in (("paper", paper), ("imitation", imitation)):
      saved.update({f"{name}_k{k}_{p}": np.asarray(v) for p, v in router_params.items()})
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  np.savez(os.path.join(workdir, "routers.npz"), **saved)
  return results


def router_table(results: dict) -> str:
  """Per domain, one row per budget: perplexity and realized big layers of each router."""
  lines = []
  for domain, res in results["domains"].items():
    lines += [f"{domain}: {res['num_tokens']} tokens; all-small {res['all_small_ppl']:.2f}, "
              f"all-big {res['all_big_ppl']:.2f}",
              f"{'k':>3}{'paper':>9}{'(big)':>7}{'exact':>9}{'imitate':>9}{'(big)':>7}"
              f"{'exact':>9}"]
    for k, row in results["budgets"].items():
      cells = []
      for name in ("paper", "imitation"):
        ev = row[name]["eval"][domain]
        cells.append(f"{ev['argmax']['ppl']:>9.2f}{ev['argmax']['big_layers']:>7.2f}"
                     f"{ev['exact']['ppl']:>9.2f}")
      lines.append(f"{int(k):>3}" + "".join(cells))
    lines.append("")
  return "\n".join(lines)
