"""The reasoning policy: byte tokens, task batches, and the train + accuracy entry point."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.policy import evaluate
from adaptive_jax.policy.data import train_iterator
from adaptive_jax.policy.train import train_policy
from adaptive_jax.tasks.arithmetic import ArithmeticSource
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from adaptive_jax.tasks.problem import format_completion, format_prompt
from configs import policy_small


def test_byte_tokenizer_round_trips_and_reserves_specials():
  tok = ByteTokenizer()
  text = "question: a = 7, b = a * 3. b = ?\nb = 7 * 3 = 21\nanswer: 21\n é"
  ids = tok.encode(text)
  assert min(ids) >= 3 and max(ids) < tok.vocab_size == 259
  assert tok.decode(ids) == text
  assert tok.decode([tok.eos_id] + ids + [tok.pad_id]) == text


def test_task_batches_hold_gold_solutions_and_are_seeded():
  tok = ByteTokenizer()
  source = ArithmeticSource(size=50, seed=0, difficulties=(1, 2))
  batch = next(train_iterator(source, tok, seq_len=256, batch_size=4, seed=3))
  assert batch["inputs"].shape == batch["targets"].shape == (4, 256)
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
  again = next(train_iterator(source, tok, seq_len=256, batch_size=4, seed=3))
  np.testing.assert_array_equal(batch["inputs"], again["inputs"])
  text = "".join(tok.decode(row) for row in batch["inputs"])
  gold = {format_prompt(p) + format_completion(p) for p in (source[i] for i in range(50))}
  assert any(g in text for g in gold)  # whole documents appear verbatim in the windows


def test_policy_config_builds():
  config = policy_small.get_config()
  model_cfg = ModelConfig.from_dict(config.model)
  assert not model_cfg.duo and model_cfg.vocab_size == ByteTokenizer().vocab_size
  tokens = jax.ShapeDtypeStruct((1, config.task.seq_len), jnp.int32)
  params = jax.eval_shape(lambda t: Transformer(model_cfg).init(jax.random.key(0), t), tokens)
  assert "ffn" in params["params"]["layers"]


def _tiny_config():
  config = policy_small.get_config()
  config.model.num_layers, config.model.d_model, config.model.d_ff_big = 1, 32, 64
  config.model.num_heads, config.model.head_dim = 2, 16
  config.task.seq_len, config.task.batch_size, config.task.max_new_tokens = 64, 4, 8
  config.task.eval_problems_per_difficulty = 1
  config.train.num_steps, config.train.warmup_steps, config.train.lr_decay_steps = 3, 1, 3
  config.train.log_every = 3
  return config


def test_train_policy_writes_accuracy_per_difficulty(tmp_path):
  results = train_policy(_tiny_config(), str(tmp_path))
  assert set(results["accuracy_by_difficulty"]) == {str(d) for d in range(1, 9)}
  assert json.loads((tmp_path / "results.json").read_text()) == results


def test_policy_rejects_a_duo_model(tmp_path):
  config = policy_small.get_config()
  config.model.duo = True
  with pytest.raises(ValueError, match="model.duo must be False"):
    train_policy(config, str(tmp_path))


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "task.batch_size must be an integer >= 1, got 0"),
    ("seq_len", 0, "task.seq_len must be an integer >= 1, got 0"),
    ("train_problems", 0, "task.train_problems must be an integer >= 1"),
    ("max_new_tokens", 0, "task.max_new_tokens must be an integer >= 1"),
    ("eval_problems_per_difficulty", -1, "task.eval_problems_per_difficulty must be an integer"),
    ("train_seed", -1, "task.train_seed must be an integer >= 0"),
    ("eval_seed", 0, "task.eval_seed must differ from task.train_seed"),
    ("train_difficulties", (), r"task.train_difficulties must be a non-empty tuple"),
    ("train_difficulties", (1, 9), r"task.train_difficulties entry must be an integer in \[1, 8\]"),
])
def test_bad_task_config_raises_naming_the_field_before_writing(tmp_path, field, value, message):
  config = _tiny_config()
  config.task[field] = value
  with pytest.raises(ValueError, match=message):
    train_policy(config, str(tmp_path))
  assert not list(tmp_path.iterdir())  # raised before config.json or any batch



def test_resume_may_change_the_evaluation_but_not_the_training_batches(tmp_path):
  train_policy(_tiny_config(), str(tmp_path))
  config = _tiny_config()
  config.task.eval_seed, config.task.max_new_tokens = 2, 4
  assert train_policy(config, str(tmp_path))["step"] == 3
  config.task.batch_size = 8
  with pytest.raises(ValueError, match=r"task.batch_size: 4 there, 8 now\. A resumed run"):
    train_policy(config, str(tmp_path))


def test_accuracy_by_difficulty_scores_known_completions(monkeypatch):
  """A fake policy writes the gold solution for difficulties 1-3 and for even answers, a wrong
  one otherwise: the accuracies are known per problem, across chunks of 5."""
  source = ArithmeticSource(size=40, seed=3)
  problems = {format_prompt(source[i]): source[i] for i in range(len(source))}
  right = lambda p: p.difficulty <= 3 or p.answer % 2 == 0

  def complete(params, model_cfg, prompts, tokenizer, *, key, max_new_tokens, policy):
    del params, model_cfg, tokenizer, key, max_new_tokens, policy
    return [format_completion(problems[t]) if right(problems[t])
            else "x = 1 + 1 = 2\nanswer: -7\n" for t in prompts]

  monkeypatch.setattr(evaluate, "complete", complete)
  accuracy = evaluate.accuracy_by_difficulty(None, None, source, None, key=jax.random.key(0),
                                             max_new_tokens=8, batch_size=5)
  expected = {d: np.mean([right(p) for p in problems.values() if p.difficulty == d])
              for d in range(1, 9)}
  assert accuracy == pytest.approx(expected)
  assert accuracy[1] == accuracy[2] == accuracy[3] == 1.0
  assert any(0 < accuracy[d] < 1 for d in range(4, 9))
