"""Trains the policy (a dense transformer) on gold solutions, then measures accuracy by difficulty."""

import dataclasses
import os

import jax
import ml_collections

from adaptive_jax import atomic_file
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.policy.data import train_iterator
from adaptive_jax.policy.evaluate import accuracy_by_difficulty, pass_at_k_by_difficulty
from adaptive_jax.tasks.arithmetic import (
  MAX_DIFFICULTY,
  MIN_DIFFICULTY,
  ArithmeticSource,
  max_text_length,
)
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from adaptive_jax.train import distributed
from adaptive_jax.train import mesh as mesh_lib
from adaptive_jax.train.config import RoutingConfig, TrainConfig
from adaptive_jax.train.loop import RESUMABLE_FIELDS, train, write_run_config
from adaptive_jax.typed_config import check_int, check_integer, check_open_interval, from_mapping


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """Which problems the policy trains and is evaluated on (configs/policy_small.py)."""
  train_problems: int = 200_000
  train_seed: int = 0
  train_difficulties: tuple[int, ...] = tuple(range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1))
  eval_problems_per_difficulty: int = 32
  eval_seed: int = 1  # a different seed: held-out problems
  seq_len: int = 400
  loss_on_question: bool = False
  batch_size: int = 32
  max_new_tokens: int = 224
  pass_at_k_samples: int = 64  # sampled solutions per evaluation problem (0: greedy only)
  sample_temperature: float = 0.7

  def __post_init__(self):
    for name in ("train_problems", "eval_problems_per_difficulty", "seq_len", "batch_size",
                 "max_new_tokens"):
      check_int("task", name, getattr(self, name))
    check_int("task", "pass_at_k_samples", self.pass_at_k_samples, minimum=0)
    check_open_interval("task", "sample_temperature", self.sample_temperature, 0.0)
    for name in ("train_seed", "eval_seed"):
      check_int("task", name, getattr(self, name), minimum=0)
    if self.eval_seed == self.train_seed:
      raise ValueError(f"task.eval_seed must differ from task.train_seed (held-out problems), "
                       f"got {self.eval_seed} for both")
    if not isinstance(self.train_difficulties, (tuple, list)) or not self.train_difficulties:
      raise ValueError(f"task.train_difficulties must be a non-empty tuple of difficulties in "
                       f"[{MIN_DIFFICULTY}, {MAX_DIFFICULTY}], got {self.train_difficulties!r}")
    for d in self.train_difficulties:
      check_integer("task.train_difficulties entry", d, minimum=MIN_DIFFICULTY,
                    maximum=MAX_DIFFICULTY)
    object.__setattr__(self, "train_difficulties", tuple(self.train_difficulties))
    if not isinstance(self.loss_on_question, bool):
      raise ValueError(f"task.loss_on_question must be True or False, got "
                       f"{self.loss_on_question!r}")
    # Problems are never cut: a row holds the longest problem of every trained difficulty.
    longest = max(max_text_length(d) + 2 for d in self.train_difficulties)  # + BOS and EOS
    if self.seq_len + 1 < longest:
      raise ValueError(f"task.seq_len must be >= {longest - 1} to hold a whole problem of "
                       f"difficulties {self.train_difficulties} (up to {longest} tokens with BOS "
                       f"and EOS, one more than the inputs), got {self.seq_len}")

  from_dict = classmethod(lambda cls, values: from_mapping(cls, values, "task"))


# Task fields read only by the evaluation after training: a resumed run may change them.
_EVAL_TASK_FIELDS = ("task.eval_problems_per_difficulty", "task.eval_seed", "task.max_new_tokens",
                     "task.pass_at_k_samples", "task.sample_temperature")


def train_policy(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming from `workdir`), evaluates greedy accuracy per difficulty, writes results."""
  model_cfg = ModelConfig.from_dict(config.model)
  task = TaskConfig.from_dict(config.task)
  train_cfg = TrainConfig.from_dict(config.train)
  if model_cfg.duo:
    raise ValueError("model.duo must be False: the policy is a dense transformer")
  tokenizer = ByteTokenizer()
  if model_cfg.vocab_size != tokenizer.vocab_size:
    raise ValueError(f"model.vocab_size must be {tokenizer.vocab_size} (bytes + 3 specials), "
                     f"got {model_cfg.vocab_size}")
  if task.seq_len > model_cfg.max_len:
    raise ValueError(f"task.seq_len ({task.seq_len}) must be <= model.max_len")
  write_run_config(config, workdir, may_change=RESUMABLE_FIELDS + _EVAL_TASK_FIELDS)
  mesh = mesh_lib.make_mesh(train_cfg.mesh_shape)
  source = ArithmeticSource(size=task.train_problems, seed=task.train_seed,
                            difficulties=task.train_difficulties)
  shard, num_shards = mesh_lib.data_shard(mesh, task.batch_size)
  train_iter = train_iterator(source, tokenizer, seq_len=task.seq_len,
                              batch_size=task.batch_size, seed=train_cfg.seed,
                              loss_on_question=task.loss_on_question,
                              process_index=shard, process_count=num_shards)
  state = train(model_cfg, RoutingConfig(), train_cfg, mesh, workdir, train_iter, task.seq_len)

  eval_source = ArithmeticSource(size=8 * task.eval_problems_per_difficulty, seed=task.eval_seed)
  accuracy = accuracy_by_difficulty(state.params, model_cfg, eval_source, tokenizer,
                                    key=jax.random.key(task.eval_seed),
                                    max_new_tokens=task.max_new_tokens)
  results = {"step": train_cfg.num_steps,
             "accuracy_by_difficulty": {str(d): a for d, a in accuracy.items()},
             "eval_problems_per_difficulty": task.eval_problems_per_difficulty}
  if task.pass_at_k_samples:
    n = task.pass_at_k_samples
    by = pass_at_k_by_difficulty(state.params, model_cfg, eval_source, tokenizer,
                                 key=jax.random.key(task.eval_seed + 1),
                                 max_new_tokens=task.max_new_tokens, samples=n,
                                 temperature=task.sample_temperature, ks=(1, n))
    results["sampled"] = {"temperature": task.sample_temperature, "samples": n,
                          "pass@1_by_difficulty": {str(d): v[1] for d, v in by.items()},
                          f"pass@{n}_by_difficulty": {str(d): v[n] for d, v in by.items()}}
  if distributed.is_writer():
    atomic_file.write_json(os.path.join(workdir, "results.json"), results)
  return results
