"""Stage-1 training: random-routing Duo (or dense) LM on the configured corpus, then evaluation."""

import json
import os
import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging

from adaptive_jax import atomic_file
from adaptive_jax import data as data_lib
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.train import checkpoint as ckpt_lib
from adaptive_jax.train import distributed
from adaptive_jax.train import mesh as mesh_lib
from adaptive_jax.train import state as state_lib
from adaptive_jax.train.config import PerplexityEvalConfig, RoutingConfig, TrainConfig
from adaptive_jax.train.evaluate import evaluate
from adaptive_jax.train.metrics import MetricWriter, read_metrics
from adaptive_jax.train.step import make_train_step

CONFIG_FILE = "config.json"
# What a resumed run may change: how long it trains, how often it logs and saves, how it is
# sharded. Any other change would leave checkpoints from two configs under one config.json.
RESUMABLE_FIELDS = ("train.num_steps", "train.log_every", "train.checkpoint_every",
                    "train.max_checkpoints", "train.mesh_shape", "train.logical_axis_rules",
                    "data.data_dir")


def _flatten(tree: dict, prefix: str = "") -> dict:
  """{'model': {'d_model': 32}} -> {'model.d_model': 32}; lists are leaves."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _check_resume(config: ml_collections.ConfigDict, workdir: str, may_change) -> None:
  """Raises unless `config` may resume the checkpoints in `workdir` (see write_run_config)."""
  path = os.path.join(workdir, CONFIG_FILE)
  step = ckpt_lib.latest_step(workdir)
  if step is None or not os.path.exists(path):
    return
  with open(path) as f:
    old = _flatten(json.load(f))
  new = _flatten(json.loads(config.to_json()))
  allowed = lambda key: any(key == name or key.startswith(name + ".") for name in may_change)
  shown = lambda values, key: repr(values[key]) if key in values else "absent"
  changed = [k for k in sorted(set(old) | set(new))
             if not allowed(k) and (k not in old or k not in new or old[k] != new[k])]
  if changed:
    diff = "; ".join(f"{k}: {shown(old, k)} there, {shown(new, k)} now" for k in changed)
    raise ValueError(f"{workdir} holds checkpoints (newest: step {step}) of another config: "
                     f"{diff}. A resumed run may change only {', '.join(may_change)}. Use a "
                     f"fresh --workdir, or the values there to resume ({path}).")
  if new["train.num_steps"] < step:
    raise ValueError(f"train.num_steps ({new['train.num_steps']}) must be >= {step}, the step "
                     f"of the newest checkpoint in {workdir}")


def write_run_config(config: ml_collections.ConfigDict, workdir: str, *,
                     may_change=RESUMABLE_FIELDS + ("eval",)) -> None:
  """Saves the run's config beside its checkpoints; later stages rebuild the model from it.

  Where `workdir` already holds checkpoints, `config` resumes them: it may differ from the
  saved config.json only in `may_change` (field names, or sections whose fields all may), and
  its train.num_steps must reach the newest checkpoint. Otherwise raises, before writing.
  Every process checks; process 0 writes.
  """
  _check_resume(config, workdir, may_change)
  distributed.barrier("config.json checked")  # all have read it before process 0 rewrites it
  if distributed.is_writer():
    os.makedirs(workdir, exist_ok=True)
    atomic_file.write_text(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2))


def typed_configs(config: ml_collections.ConfigDict):
  """(model, data, routing, train, eval) dataclasses, validated and mutually consistent."""
  model = ModelConfig.from_dict(config.model)
  data = data_lib.DataConfig(**config.data)
  if data.vocab_size != model.vocab_size:
    raise ValueError(f"data.vocab_size ({data.vocab_size}) must equal model.vocab_size "
                     f"({model.vocab_size})")
  if data.seq_len > model.max_len:
    raise ValueError(f"data.seq_len ({data.seq_len}) must be <= model.max_len ({model.max_len})")
  return (model, data, RoutingConfig.from_dict(config.routing),
          TrainConfig.from_dict(config.train), PerplexityEvalConfig.from_dict(config.eval))


def _check_finite(pending: list[tuple[int, dict]]) -> None:
  for step, metrics in pending:
    loss = float(np.asarray(metrics["train/loss"]))
    if not np.isfinite(loss):
      raise FloatingPointError(f"train/loss is {loss} at step {step}; stopping. Lower "
                               f"train.learning_rate or check the data.")


def train(model_cfg, routing_cfg, train_cfg, mesh, workdir, train_iter, seq_len: int):
  """Runs (or resumes) training to `train_cfg.num_steps`; returns the final state.

  `train_iter` yields this process's share of each batch ({'inputs', 'targets'}, int32
  [B / shards, seq_len], see mesh.data_shard) and is a grain DatasetIterator, whose state is
  checkpointed with the model so a resume sees the same batches. Process 0 writes the metrics.
  """
  init_fn, abstract_state = state_lib.sharded_state_init(
      model_cfg, train_cfg, routing_cfg, mesh, seq_len)
  # The context closes the manager (waiting for async saves) even when a step raises.
  with ckpt_lib.make_manager(workdir, max_to_keep=train_cfg.max_checkpoints) as manager:
    state = ckpt_lib.restore_latest(manager, abstract_state, train_iter)
    if state is None:
      state = init_fn()
    start = int(state.step)
    logging.info("model: %d parameters, mesh %s, starting at step %d",
                 state_lib.count_params(state.params), dict(mesh.shape), start)
    writer = MetricWriter(workdir)
    writer.truncate_after(start)
    step_fn = make_train_step(model_cfg, routing_cfg, jax.random.key(train_cfg.seed + 1),
                              jax.tree.map(lambda x: x.sharding, abstract_state),
                              mesh_lib.batch_sharding(mesh))
    pending, tick = [], time.time()
    # Logical axis rules must be active while the step is traced.
    with jax.set_mesh(mesh), nn.logical_axis_rules(train_cfg.logical_axis_rules):
      for step in range(start, train_cfg.num_steps):
        state, metrics = step_fn(state, mesh_lib.global_batch(next(train_iter), mesh))
        pending.append((step, metrics))
        done = step + 1
        if done % train_cfg.log_every == 0 or done == train_cfg.num_steps:
          _check_finite(pending)
          rate = len(pending) / (time.time() - tick)
          # Means over the steps since the last log line: less noisy than the last step alone.
          means = {k: np.mean([np.asarray(m[k]) for _, m in pending]) for k in metrics}
          writer.write_scalars(done, {**means, "train/steps_per_sec": rate})
          if distributed.is_writer():
            print(f"step {done}/{train_cfg.num_steps}  loss {means['train/loss']:.4f}  "
                  f"{rate:.2f} steps/s", flush=True)
          pending, tick = [], time.time()
        if done % train_cfg.checkpoint_every == 0 or done == train_cfg.num_steps:
          # Every loss since the last log line, then the params (in save): no state is saved
          # unchecked, whatever log_every and checkpoint_every are.
          _check_finite(pending)
          ckpt_lib.save(manager, done, state, train_iter)
    writer.close()
  distributed.barrier("metrics written")  # so every process may read metrics.jsonl
  return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains to `train.num_steps` (resuming from `workdir`), evaluates, writes results.json.

  results.json: 'train/loss' (mean over the last log interval), 'eval/loss@<policy>' and
  'eval/ppl@<policy>' on held-out batches for all-small, random and all-big routing.
  """
  model_cfg, data_cfg, routing_cfg, train_cfg, eval_cfg = typed_configs(config)
  write_run_config(config, workdir)
  mesh = mesh_lib.make_mesh(train_cfg.mesh_shape)
  if data_cfg.batch_size % mesh.shape["data"]:
    raise ValueError(f"data.batch_size ({data_cfg.batch_size}) must be divisible by the mesh's "
                     f"data axis ({mesh.shape['data']})")
  # Process 0 builds the dataset and tokenizer; the others then find them and load them.
  tokenizer = distributed.writer_first(lambda: data_lib.prepare(data_cfg))
  # Read the held-out batches first: a split too small for eval.num_batches fails before training.
  eval_batches = data_lib.make_eval_batches(data_cfg, tokenizer, num_batches=eval_cfg.num_batches)
  shard, num_shards = mesh_lib.data_shard(mesh, data_cfg.batch_size)
  train_iter = data_lib.make_train_iterator(data_cfg, tokenizer, process_index=shard,
                                            process_count=num_shards)
  state = train(model_cfg, routing_cfg, train_cfg, mesh, workdir, train_iter, data_cfg.seq_len)

  results = evaluate(state.params, state.apply_fn, eval_batches, model_cfg, eval_cfg, mesh)
  final = [row for row in read_metrics(workdir) if row["step"] == train_cfg.num_steps]
  results = {"step": train_cfg.num_steps,
             "train/loss": final[-1]["train/loss"] if final else None,
             "num_params": state_lib.count_params(state.params), **results}
  if distributed.is_writer():
    atomic_file.write_json(os.path.join(workdir, "results.json"), results)
  return results
