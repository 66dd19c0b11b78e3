"""Stage-2 study: oracle, context-consistent oracle and baselines per budget on a trained Duo model."""

import dataclasses
import os

import ml_collections
import numpy as np
from absl import logging

from adaptive_jax import atomic_file, routing
from adaptive_jax import data as data_lib
from adaptive_jax.oracle import budget as budget_lib
from adaptive_jax.oracle import pattern_tree, sequential
from adaptive_jax.perplexity import perplexity
from adaptive_jax.train.trained import load_trained
from adaptive_jax.typed_config import check_int, from_mapping


@dataclasses.dataclass(frozen=True)
class OracleConfig:
  """See configs/oracle_small.py for the meaning of each field."""
  domains: tuple[str, ...] = ("shakespeare", "python_stdlib")
  num_sequences: int = 8
  seq_len: int = 128
  chunk_sequences: int = 4
  split_depth: int = 6
  budgets: tuple[int, ...] = tuple(range(13))
  random_patterns: int = 100
  seed: int = 0
  sequential_sequences: int = 2
  sequential_seq_len: int = 64
  sequential_budgets: tuple[int, ...] = (0, 1, 2, 4, 6, 8, 10, 12)
  skip_patterns: int = 512
  skip_sequences: int = 2
  text_budget: int = 6

  def __post_init__(self):
    for name in ("num_sequences", "seq_len", "chunk_sequences", "random_patterns",
                 "sequential_sequences", "sequential_seq_len", "skip_sequences"):
      check_int("oracle", name, getattr(self, name))
    check_int("oracle", "skip_patterns", self.skip_patterns, minimum=0)  # 0: no skip variant
    if self.num_sequences % self.chunk_sequences:
      raise ValueError(f"oracle.num_sequences ({self.num_sequences}) must be a multiple of "
                       f"oracle.chunk_sequences ({self.chunk_sequences})")
    for name, limit in (("sequential_sequences", self.num_sequences),
                        ("skip_sequences", self.num_sequences),
                        ("sequential_seq_len", self.seq_len)):
      if getattr(self, name) > limit:
        raise ValueError(f"oracle.{name} ({getattr(self, name)}) must be <= {limit}")

  def validate_for(self, num_layers: int, max_len: int) -> None:
    """Budgets within [0, L] and sequences no longer than the model's context."""
    for name in ("budgets", "sequential_budgets"):
      for k in getattr(self, name):
        routing.validate_budget(k, num_layers=num_layers, name=f"oracle.{name} entry")
    routing.validate_budget(self.text_budget, num_layers=num_layers, name="oracle.text_budget")
    if not 1 <= self.split_depth <= num_layers:
      raise ValueError(f"oracle.split_depth must be in [1, {num_layers}], got {self.split_depth}")
    if self.seq_len > max_len:
      raise ValueError(f"oracle.seq_len ({self.seq_len}) must be <= model.max_len ({max_len})")


def _pattern_string(routes_L) -> str:
  """Routes as letters, first layer first: '-' skip, 's' small, 'b' big."""
  return "".join("-sb"[int(r)] for r in routes_L)


def _domain_study(params, model_cfg, tokens_BxT, targets_BxT, cfg: OracleConfig):
  """Everything reported for one domain; also the per-token arrays of the first sequence."""
  L = model_cfg.num_layers
  routes_PxL = np.asarray(pattern_tree.pattern_routes(L))
  chunks = [pattern_tree.pattern_loss_matrix(
      params, model_cfg, tokens_BxT[i:i + cfg.chunk_sequences],
      targets_BxT[i:i + cfg.chunk_sequences], split_depth=cfg.split_depth)
            for i in range(0, tokens_BxT.shape[0], cfg.chunk_sequences)]
  loss_PxBxT = np.concatenate([np.asarray(c) for c in chunks], axis=1)
  all_small = int(np.flatnonzero((routes_PxL == routing.Route.SMALL).all(1))[0])
  all_big = int(np.flatnonzero((routes_PxL == routing.Route.BIG).all(1))[0])
  result = {"num_tokens": int(tokens_BxT.size), "num_patterns": int(routes_PxL.shape[0]),
            "all_small_ppl": perplexity(loss_PxBxT[all_small]), "all_big_ppl": perplexity(loss_PxBxT[all_big]),
            "budgets": budget_lib.budget_table(loss_PxBxT, routes_PxL, cfg.budgets, seed=cfg.seed,
                                               num_random=cfg.random_patterns)}
  for row in result["budgets"].values():
    row["fixed_routes"] = _pattern_string(routes_PxL[row["fixed_pattern"]])
  logging.info("pattern oracle done: %s", {k: round(v["oracle_ppl"], 2)
                                           for k, v in result["budgets"].items()})

  s, t = cfg.sequential_sequences, cfg.sequential_seq_len
  route_KxBxTxL, loss_KxBxT = sequential.sequential_oracle(
      params, model_cfg, tokens_BxT[:s, :t], targets_BxT[:s, :t], cfg.sequential_budgets)
  loss_KxBxT, route_KxBxTxL = np.asarray(loss_KxBxT), np.asarray(route_KxBxTxL)
  seq_rows = {}
  for i, k in enumerate(cfg.sequential_budgets):
    paper_BxT, _ = budget_lib.oracle(loss_PxBxT[:, :s, :t], routes_PxL, k)
    seq_rows[k] = {"sequential_ppl": perplexity(loss_KxBxT[i]), "oracle_ppl_same_tokens": perplexity(paper_BxT),
                   "big_by_layer": (route_KxBxTxL[i] == routing.Route.BIG).mean((0, 1)).tolist()}
  result["sequential"] = {"num_tokens": s * t, "budgets": seq_rows}

  if cfg.skip_patterns:
    rng = np.random.default_rng(cfg.seed)
    skip_routes_PxL = rng.integers(0, routing.NUM_ROUTES, (cfg.skip_patterns, L)).astype(np.int32)
    n = cfg.skip_sequences
    skip_loss = np.asarray(pattern_tree.subset_loss_matrix(
        params, model_cfg, tokens_BxT[:n], targets_BxT[:n], skip_routes_PxL))
    budgets = sorted(set(int(b) for b in (skip_routes_PxL == routing.Route.BIG).sum(1)))
    skip_rows = {}
    for k in (k for k in cfg.budgets if k in budgets):
      oracle_BxT, index_BxT = budget_lib.oracle(skip_loss, skip_routes_PxL, k)
      skip_rows[k] = {"oracle_ppl": perplexity(oracle_BxT),
                      "big_by_layer": budget_lib.layer_usage(skip_routes_PxL, index_BxT, routing.Route.BIG),
                      "skip_by_layer": budget_lib.layer_usage(skip_routes_PxL, index_BxT, routing.Route.SKIP)}
    result["skip"] = {"num_patterns": cfg.skip_patterns, "num_tokens": n * tokens_BxT.shape[1],
                      "budgets": skip_rows}

  text_oracle_BxT, _ = budget_lib.oracle(loss_PxBxT[:, :1], routes_PxL, cfg.text_budget)
  per_token = {"loss_small": loss_PxBxT[all_small, 0], "loss_big": loss_PxBxT[all_big, 0],
               "loss_oracle": np.asarray(text_oracle_BxT)[0], "budget": cfg.text_budget}
  # What stage 3 compares its routers with on these very tokens (studies/router_study.py).
  arrays = {"inputs_BxT": np.asarray(tokens_BxT), "targets_BxT": np.asarray(targets_BxT),
            "loss_PxBxT": loss_PxBxT.astype(np.float32), "routes_PxL": routes_PxL,
            "sequential_budgets_K": np.asarray(cfg.sequential_budgets),
            "sequential_route_KxBxTxL": route_KxBxTxL.astype(np.int8),
            "sequential_loss_KxBxT": loss_KxBxT}
  return result, per_token, arrays


def run_oracle_study(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the study on every domain; writes results.json, <domain>_tokens.npz (figures) and
  <domain>_oracle.npz (tokens, pattern loss matrix, context-consistent routes: stage 3)."""
  cfg = from_mapping(OracleConfig, config.oracle, "oracle")
  train_command = (f"python -m experiments.train_duo --config={config.stage1_config} "
                   f"--workdir={config.stage1_workdir}")
  stage1_config, model_cfg, params = load_trained(config.stage1_workdir,
                                                  train_command=train_command)
  data_cfg = data_lib.DataConfig(**stage1_config.data)
  cfg.validate_for(model_cfg.num_layers, model_cfg.max_len)
  tokenizer = data_lib.prepare(data_cfg)
  os.makedirs(workdir, exist_ok=True)
  results = {"stage1_workdir": config.stage1_workdir, "num_layers": model_cfg.num_layers,
             "domains": {}}
  for domain in cfg.domains:
    tokens_BxT, targets_BxT = data_lib.first_sequences(data_cfg, tokenizer, domain,
                                                       cfg.num_sequences, cfg.seq_len)
    result, per_token, arrays = _domain_study(params, model_cfg, tokens_BxT, targets_BxT, cfg)
    results["domains"][domain] = result
    atomic_file.write_npz(os.path.join(workdir, f"{domain}_oracle.npz"), arrays)
    pieces = [tokenizer.decode([int(i)]) for i in targets_BxT[0]]
    atomic_file.write_npz(os.path.join(workdir, f"{domain}_tokens.npz"),
                          dict(pieces=np.array(pieces), inputs=tokens_BxT[0],
                               tokens=targets_BxT[0], **per_token))
    atomic_file.write_json(os.path.join(workdir, "results.json"), results)
  return results
