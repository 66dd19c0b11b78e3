"""Stage-3 study: per budget, the paper's router and an oracle-imitating router on a frozen Duo.

Both learn from the first `train_sequences` sequences of the stage-1 corpus's training split;
the imitation router from the context-consistent sequential oracle's routes on the first
`oracle_sequences` x `oracle_seq_len` of them. Each is evaluated on held-out text per domain
under argmax routing (reporting the budget it realizes) and under budget-exact routing.

Beside them, on the same held-out tokens: the stage-2 oracle study's rows (the per-token
oracle and the best fixed pattern chosen on that very text, both reading the targets; the
context-consistent oracle on its subset, with the routers' perplexity on that subset), how
often each router picks the context-consistent oracle's route on held-out text, and the dense
models of equal FFN compute (router/dense_baseline.py). Budget schedules (paper Fig. 4c): a
paper router trained for S budgets along S equal segments against the one trained for their
mean, and the per-token oracle under both.
"""

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from adaptive_jax import atomic_file, routing
from adaptive_jax import data as data_lib
from adaptive_jax.nn import router as router_lib
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.oracle import budget as budget_lib
from adaptive_jax.oracle import sequential
from adaptive_jax.perplexity import perplexity
from adaptive_jax.router import dense_baseline
from adaptive_jax.router import train as router_train
from adaptive_jax.router.train import RouterConfig
from adaptive_jax.train.step import cross_entropy
from adaptive_jax.train.trained import load_trained


@functools.partial(jax.jit, static_argnames=("cfg", "route"))
def _token_loss(params, tokens_BxT, targets_BxT, *, cfg, route=None):
  """Per-token loss under one route at every layer (None: a dense model)."""
  route_BxTxL = None if route is None else routing.constant_routes(
      (*tokens_BxT.shape, cfg.num_layers), route)
  logits_BxTxV = Transformer(cfg).apply({"params": params}, tokens_BxT, route_BxTxL=route_BxTxL)
  return cross_entropy(logits_BxTxV, targets_BxT)


def _segment_ppl(loss_BxT, num_segments: int) -> list[float]:
  """Perplexity of each of `num_segments` equal segments along the sequence."""
  return [perplexity(part) for part in np.split(np.asarray(loss_BxT), num_segments, axis=1)]


def _ffn_width(model_cfg, route_BxTxL) -> float:
  """Mean FFN width a token passes through per layer (its FFN FLOPs / (6 D L))."""
  width_R = np.array([0.0, model_cfg.d_ff_small, model_cfg.d_ff_big])  # SKIP, SMALL, BIG
  return float(width_R[np.asarray(route_BxTxL)].mean())


def _evaluate(params, router_params, model_cfg, held_out, budget) -> tuple[dict, dict]:
  """Per domain: argmax routing (the budget it realizes) and budget-exact routing; and the
  per-token losses and routes behind them."""
  summary, arrays = {}, {}
  for domain, xy in held_out.items():
    summary[domain], arrays[domain] = {}, {}
    for mode, b in (("argmax", None), ("exact", budget)):
      loss_BxT, route_BxTxL = router_train.hard_eval(params, router_params, model_cfg, *xy,
                                                     budget=b)
      summary[domain][mode] = {**router_train.summarize(loss_BxT, route_BxTxL),
                               "ffn_width": _ffn_width(model_cfg, route_BxTxL)}
      arrays[domain][mode] = (loss_BxT, route_BxTxL)
  return summary, arrays


def _final(history: dict) -> dict:
  """Mean of each metric over the last tenth of the steps (at least one)."""
  n = max(1, len(next(iter(history.values()))) // 10)
  return {k.split("/")[-1]: float(np.mean(v[-n:])) for k, v in history.items()}


def _read_oracle(oracle_workdir: str, stage1_workdir: str, held_out: dict) -> dict:
  """The stage-2 study's results and arrays per domain, checked to be on these held-out tokens."""
  path = os.path.join(oracle_workdir, "results.json")
  command = (f"python -m experiments.oracle --config=configs/oracle_small.py "
             f"--workdir={oracle_workdir} --config.stage1_workdir={stage1_workdir}")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no oracle study in {oracle_workdir} (config.oracle_workdir). Run "
                            f"it first:\n  {command}")
  with open(path) as f:
    results = json.load(f)
  if os.path.abspath(results["stage1_workdir"]) != os.path.abspath(stage1_workdir):
    raise ValueError(f"the oracle study in {oracle_workdir} ran on {results['stage1_workdir']}, "
                     f"the routers on {stage1_workdir} (config.stage1_workdir): one model")
  oracle = {}
  for domain, (x_BxT, _) in held_out.items():
    npz = os.path.join(oracle_workdir, f"{domain}_oracle.npz")
    if domain not in results["domains"] or not os.path.exists(npz):
      raise FileNotFoundError(f"the oracle study in {oracle_workdir} has no {npz} for domain "
                              f"{domain!r} (router.eval_domains): rerun it:\n  {command}")
    arrays = dict(np.load(npz))
    if arrays["inputs_BxT"].shape != x_BxT.shape or np.any(arrays["inputs_BxT"] != x_BxT):
      raise ValueError(f"{npz} holds other tokens (shape {arrays['inputs_BxT'].shape}) than the "
                       f"routers' held-out {domain} text (shape {x_BxT.shape}): set "
                       f"oracle.num_sequences / oracle.seq_len equal to router.eval_sequences / "
                       f"router.seq_len")
    oracle[domain] = {"results": results["domains"][domain], **arrays}
  return oracle


def _router_routes(params, router_params, model_cfg, tokens_BxT, route_BxTxL) -> np.ndarray:
  """The routes a router picks on the states of a given path (teacher forcing), [B, T, L]."""
  out = jax.jit(router_lib.teacher_forced, static_argnames="cfg")(
      params, router_params, model_cfg, jnp.asarray(tokens_BxT), jnp.asarray(route_BxTxL))
  ids_R = np.array([int(r) for r in router_lib.options(router_params)])
  return ids_R[np.asarray(jnp.argmax(out.router_logits_BxTxLxR, -1))]


def budget_rate_agreement(route_BxTxL, budget: int) -> float:
  """Expected agreement with `route_BxTxL` of a router that only matches the budget's marginal
  rate: BIG with probability k / L at every token and layer, independently. Worked example,
  L=4, k=1, one token with routes (B, S, S, S): (1/4 + 3/4 + 3/4 + 3/4) / 4 = 5/8."""
  route_BxTxL = np.asarray(route_BxTxL)
  rate = budget / route_BxTxL.shape[-1]
  return float(np.mean(np.where(route_BxTxL == routing.Route.BIG, rate, 1 - rate)))


def _oracle_rows(k, oracle, losses, routers, train_routes_BxTxL, params, model_cfg) -> dict:
  """For one budget and domain: the oracles beside the routers on the same tokens, and how
  often each router picks the context-consistent oracle's route on held-out text (teacher
  forced on the oracle's path) against two routers that see nothing: one matching the
  budget's marginal rate and the best constant guess per layer from the training oracle's
  routes (its majority route at each layer)."""
  row = dict(oracle["results"]["budgets"][str(k)])
  seq_budgets = [int(b) for b in oracle["sequential_budgets_K"]]
  if k not in seq_budgets:
    return row
  i = seq_budgets.index(k)
  route_BxTxL = oracle["sequential_route_KxBxTxL"][i].astype(np.int32)
  s, t = route_BxTxL.shape[:2]
  row["context_consistent_ppl"] = perplexity(oracle["sequential_loss_KxBxT"][i])
  row["context_consistent_tokens"] = s * t
  row["oracle_ppl_same_tokens"] = perplexity(budget_lib.oracle(
      oracle["loss_PxBxT"][:, :s, :t], oracle["routes_PxL"], k)[0])
  for name, by_mode in losses.items():
    for mode, (loss_BxT, _) in by_mode.items():
      row[f"{name}_{mode}_ppl_same_tokens"] = perplexity(loss_BxT[:s, :t])
  majority_L = (train_routes_BxTxL == routing.Route.BIG).mean((0, 1)) > 0.5
  guess_L = np.where(majority_L, int(routing.Route.BIG), int(routing.Route.SMALL))
  row["agreement"] = {"num_decisions": int(route_BxTxL.size),
                      "budget_rate": budget_rate_agreement(route_BxTxL, k),
                      "constant_per_layer": float(np.mean(guess_L == route_BxTxL))}
  for name, router_params in routers.items():
    picked = _router_routes(params, router_params, model_cfg, oracle["inputs_BxT"][:s, :t],
                            route_BxTxL)
    row["agreement"][name] = float(np.mean(picked == route_BxTxL))
  return row


def _dense_rows(dense_workdir, budgets, held_out, model_cfg) -> dict:
  """Per budget: the equal-compute dense model's width and held-out perplexity per domain."""
  rows = {}
  for k in budgets:
    workdir = dense_baseline.budget_workdir(dense_workdir, k)
    _, dense_cfg, dense_params = load_trained(workdir, train_command=(
        f"python -m experiments.dense_baseline --config=configs/router_small.py "
        f"--workdir={dense_workdir}"))
    if dense_cfg.d_ff_big != dense_baseline.equal_compute_width(model_cfg, k):
      raise ValueError(f"{workdir} holds a dense model of width {dense_cfg.d_ff_big}, not the "
                       f"{dense_baseline.equal_compute_width(model_cfg, k)} of equal compute at "
                       f"budget {k}")
    rows[str(k)] = {"d_ff": dense_cfg.d_ff_big, **{
        domain: {"ppl": perplexity(_token_loss(dense_params, *map(jnp.asarray, xy), cfg=dense_cfg))}
        for domain, xy in held_out.items()}}
  return rows


def _schedule_rows(schedule, paper, constant, params, model_cfg, held_out, oracle) -> dict:
  """A budget schedule against the constant budget of the same mean, per domain: perplexity
  per segment of the paper router trained for each (budget-exact; the scheduled one also
  under argmax, the allocation it learned) and, given the oracle study, the oracle's."""
  S, T = len(schedule), next(iter(held_out.values()))[0].shape[1]
  budget_T = router_train.schedule_positions(schedule, T)
  mean = int(round(sum(schedule) / S))
  rows = {}
  for domain, xy in held_out.items():
    rows[domain] = {}
    for name, router_params, b in (("schedule", paper, budget_T), ("constant", constant, mean),
                                   ("schedule_argmax", paper, None)):
      loss_BxT, route_BxTxL = router_train.hard_eval(params, router_params, model_cfg, *xy,
                                                     budget=b)
      rows[domain][f"router_{name}"] = {**router_train.summarize(loss_BxT, route_BxTxL),
                                        "ppl_by_segment": _segment_ppl(loss_BxT, S)}
    if oracle is not None:
      loss_PxBxT, routes_PxL = oracle[domain]["loss_PxBxT"], oracle[domain]["routes_PxL"]
      for name, b_T in (("schedule", budget_T), ("constant", np.full(T, mean))):
        loss_BxT, _ = budget_lib.scheduled_oracle(loss_PxBxT, routes_PxL, b_T)
        rows[domain][f"oracle_{name}"] = {"ppl": perplexity(loss_BxT),
                                          "ppl_by_segment": _segment_ppl(loss_BxT, S)}
  return {"schedule": list(schedule), "mean": mean, "domains": rows}


def run_router_study(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates both routers per budget and the scheduled routers; beside them the
  oracle study's rows (config.oracle_workdir) and the dense baselines (config.dense_workdir),
  each left out when its workdir is empty. Writes results.json, routers.npz, routes.npz."""
  cfg = RouterConfig.from_dict(config.router)
  train_command = (f"python -m experiments.train_duo --config={config.stage1_config} "
                   f"--workdir={config.stage1_workdir}")
  stage1_config, model_cfg, params = load_trained(config.stage1_workdir,
                                                  train_command=train_command)
  cfg.validate_for(model_cfg.num_layers, model_cfg.max_len)
  data_cfg = data_lib.DataConfig(**stage1_config.data)
  tokenizer = data_lib.prepare(data_cfg)
  tokens_NxT, targets_NxT = data_lib.first_sequences(data_cfg, tokenizer, data_cfg.name,
                                                     cfg.train_sequences, cfg.seq_len, "train")
  held_out = {d: data_lib.first_sequences(data_cfg, tokenizer, d, cfg.eval_sequences,
                                          cfg.seq_len) for d in cfg.eval_domains}
  oracle = (_read_oracle(config.oracle_workdir, config.stage1_workdir, held_out)
            if config.get("oracle_workdir") else None)
  os.makedirs(workdir, exist_ok=True)
  s, t = cfg.oracle_sequences, cfg.oracle_seq_len
  results = {"stage1_workdir": config.stage1_workdir, "num_layers": model_cfg.num_layers,
             "d_ff_small": model_cfg.d_ff_small, "d_ff_big": model_cfg.d_ff_big,
             "oracle_workdir": config.get("oracle_workdir", ""),
             "dense_workdir": config.get("dense_workdir", ""),
             "train_tokens": int(tokens_NxT.size), "imitation_train_tokens": s * t,
             "domains": {}, "budgets": {}, "schedules": {}}
  for domain, (x, y) in held_out.items():
    x, y = jnp.asarray(x), jnp.asarray(y)
    results["domains"][domain] = {
        "num_tokens": int(x.size),
        **{f"all_{r.name.lower()}_ppl": perplexity(_token_loss(params, x, y, cfg=model_cfg, route=r))
           for r in (routing.Route.SMALL, routing.Route.BIG)}}

  oracle_route_KxBxTxL, oracle_loss_KxBxT = map(np.asarray, sequential.sequential_oracle(
      params, model_cfg, tokens_NxT[:s, :t], targets_NxT[:s, :t], cfg.budgets))
  logging.info("context-consistent oracle routes done on %d x %d training tokens", s, t)
  imitation_cfg = dataclasses.replace(cfg, with_skip=False)  # the oracle takes no SKIP
  saved, routes, paper_routers = {}, {}, {}
  for i, k in enumerate(cfg.budgets):
    key = jax.random.fold_in(jax.random.key(cfg.seed), k)
    paper, paper_history = router_train.train_paper_router(
        params, model_cfg, cfg, tokens_NxT, targets_NxT, budget=k, key=jax.random.fold_in(key, 0))
    imitation, imitation_history = router_train.train_imitation_router(
        params, model_cfg, imitation_cfg, tokens_NxT[:s, :t], oracle_route_KxBxTxL[i],
        key=jax.random.fold_in(key, 1))
    paper_routers[k] = paper
    routers = {"paper": paper, "imitation": imitation}
    row = {"oracle_train_ppl": perplexity(oracle_loss_KxBxT[i])}
    losses = {}
    for name, router_params, history in (("paper", paper, paper_history),
                                         ("imitation", imitation, imitation_history)):
      summary, arrays = _evaluate(params, router_params, model_cfg, held_out, k)
      row[name] = {"train": _final(history), "eval": summary}
      for domain, by_mode in arrays.items():
        losses.setdefault(domain, {})[name] = by_mode
        routes[f"{domain}_{name}_k{k}"] = by_mode["argmax"][1][0].astype(np.int8)
      saved.update({f"{name}_k{k}_{p}": np.asarray(v) for p, v in router_params.items()})
    if oracle is not None:
      row["oracles"] = {d: _oracle_rows(k, oracle[d], losses[d], routers,
                                        oracle_route_KxBxTxL[i], params, model_cfg)
                        for d in held_out}
    results["budgets"][str(k)] = row
    logging.info("budget %d: %s", k, row)
    _write(workdir, results)
  for schedule in cfg.schedules:
    key = jax.random.fold_in(jax.random.key(cfg.seed), 1000 + len(results["schedules"]))
    paper, _ = router_train.train_paper_router(params, model_cfg, cfg, tokens_NxT, targets_NxT,
                                               budget=schedule, key=key)
    mean = int(round(sum(schedule) / len(schedule)))
    name = "-".join(map(str, schedule))
    results["schedules"][name] = _schedule_rows(schedule, paper, paper_routers[mean], params,
                                                model_cfg, held_out, oracle)
    saved.update({f"schedule_{name}_{p}": np.asarray(v) for p, v in paper.items()})
    _write(workdir, results)
  if config.get("dense_workdir"):  # read last: the baselines may train while the routers do
    dense = _dense_rows(config.dense_workdir, cfg.budgets, held_out, model_cfg)
    for k, row in dense.items():
      results["budgets"][k]["dense"] = row
    _write(workdir, results)
  atomic_file.write_npz(os.path.join(workdir, "routers.npz"), saved)
  # The first held-out sequence's routes, [T, L].
  atomic_file.write_npz(os.path.join(workdir, "routes.npz"), routes)
  return results


def _write(workdir: str, results: dict) -> None:
  atomic_file.write_json(os.path.join(workdir, "results.json"), results)


def router_table(results: dict) -> str:
  """Per domain, one row per budget: perplexity and realized big layers of each router, and
  (when the study had them) the oracles, the best fixed pattern and the dense baseline."""
  lines = []
  for domain, res in results["domains"].items():
    lines += [f"{domain}: {res['num_tokens']} tokens; all-small {res['all_small_ppl']:.2f}, "
              f"all-big {res['all_big_ppl']:.2f}",
              f"{'k':>3}{'paper':>9}{'(big)':>7}{'exact':>9}{'imitate':>9}{'(big)':>7}"
              f"{'exact':>9}{'oracle':>9}{'fixed':>9}{'dense':>9}"]
    for k, row in results["budgets"].items():
      cells = []
      for name in ("paper", "imitation"):
        ev = row[name]["eval"][domain]
        cells.append(f"{ev['argmax']['ppl']:>9.2f}{ev['argmax']['big_layers']:>7.2f}"
                     f"{ev['exact']['ppl']:>9.2f}")
      oracles = row.get("oracles", {}).get(domain)
      cells.append(f"{oracles['oracle_ppl']:>9.2f}{oracles['fixed_ppl']:>9.2f}" if oracles
                   else f"{'-':>9}{'-':>9}")
      cells.append(f"{row['dense'][domain]['ppl']:>9.2f}" if "dense" in row else f"{'-':>9}")
      lines.append(f"{int(k):>3}" + "".join(cells))
    for name, sched in results["schedules"].items():
      rows = sched["domains"][domain]
      parts = [f"{who} " + "/".join(f"{p:.2f}" for p in rows[who]["ppl_by_segment"])
               for who in rows]
      lines.append(f"schedule {name} vs constant {sched['mean']}, ppl by segment: "
                   + "; ".join(parts))
    lines.append("")
  return "\n".join(lines)
