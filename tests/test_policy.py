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
from adaptive_jax.sampler import decode
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


def test_task_batches_pack_whole_problems_with_segments_and_solution_weights():
  tok = ByteTokenizer()
  source = ArithmeticSource(size=50, seed=0, difficulties=(1, 2))
  batch = next(train_iterator(source, tok, seq_len=256, batch_size=4, seed=3))
  for name in ("inputs", "targets", "segment_ids", "positions", "weights"):
    assert batch[name].shape == (4, 256), name
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
  again = next(train_iterator(source, tok, seq_len=256, batch_size=4, seed=3))
  np.testing.assert_array_equal(batch["inputs"], again["inputs"])
  gold = {format_prompt(p) + format_completion(p): p for p in (source[i] for i in range(50))}
  # Per segment, rebuilt by hand: BOS, a whole gold problem, EOS; positions from 0; weights
  # on exactly the solution's bytes and its EOS.
  for row in range(4):
    seg = batch["segment_ids"][row]
    for s in np.unique(seg[seg > 0]):
      at = np.flatnonzero(seg == s)
      tokens = batch["inputs"][row, at]
      if tokens[-1] != tok.eos_id:  # the row's last token is a target only
        tokens = np.append(tokens, batch["targets"][row, at[-1]])
      assert tokens[0] == tokens[-1] == tok.eos_id
      text = tok.decode(tokens)
      assert text in gold
      np.testing.assert_array_equal(batch["positions"][row, at], np.arange(len(at)))
      # Input k predicts token k + 1: weighted when that is a solution byte or the final EOS.
      solution, m = len(format_completion(gold[text])) + 1, len(tokens)
      k = np.arange(len(at))
      np.testing.assert_array_equal(batch["weights"][row, at], (k + 1 >= m - solution) & (k + 1 < m))
    assert (batch["weights"][row, seg == 0] == 0).all()


def test_a_problem_longer_than_the_window_raises_naming_seq_len():
  source = ArithmeticSource(size=8, seed=0, difficulties=(8,))
  with pytest.raises(ValueError, match=r"task.seq_len \(100\) is shorter than a training "
                                       r"problem of difficulty 8"):
    next(train_iterator(source, ByteTokenizer(), seq_len=100, batch_size=2, seed=0))


def test_segment_mask_makes_packed_rows_equal_separate_rows():
  """A packed row's logits equal each problem's logits computed alone (the independent
  reference): no attention across problems, positions restart per problem."""
  cfg = ModelConfig(vocab_size=259, num_layers=2, d_model=32, num_heads=2, head_dim=16,
                    d_ff_big=64, d_ff_small=8, max_len=64, duo=False)
  model = Transformer(cfg)
  rng = np.random.default_rng(0)
  a, b = rng.integers(3, 259, 11), rng.integers(3, 259, 17)
  packed = jnp.asarray(np.r_[a, b, np.zeros(4, int)][None], jnp.int32)
  segments = jnp.asarray(np.r_[np.ones(11), 2 * np.ones(17), np.zeros(4)][None], jnp.int32)
  positions = jnp.asarray(np.r_[np.arange(11), np.arange(17), np.zeros(4)][None], jnp.int32)
  params = model.init(jax.random.key(0), packed)
  logits = model.apply(params, packed, positions_BxT=positions, segment_ids_BxT=segments)
  alone_a = model.apply(params, jnp.asarray(a[None], jnp.int32))
  alone_b = model.apply(params, jnp.asarray(b[None], jnp.int32))
  np.testing.assert_allclose(logits[0, :11], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(logits[0, 11:28], alone_b[0], atol=1e-5)
  unmasked = model.apply(params, packed, positions_BxT=positions)
  assert not np.allclose(unmasked[0, 11:28], alone_b[0], atol=1e-3)  # the mask matters


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
  config.task.train_difficulties = (1, 2)
  config.task.seq_len, config.task.batch_size, config.task.max_new_tokens = 120, 4, 8
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
    ("seq_len", 100, r"task.seq_len must be >= 115 to hold a whole problem of difficulties "
                     r"\(1, 2\) \(up to 116 tokens"),
])
def test_bad_task_config_raises_naming_the_field_before_writing(tmp_path, field, value, message):
  config = _tiny_config()
  config.task[field] = value
  with pytest.raises(ValueError, match=message):
    train_policy(config, str(tmp_path))
  assert not list(tmp_path.iterdir())  # raised before config.json or any batch



def test_loss_on_question_must_be_a_bool():
  from adaptive_jax.policy.train import TaskConfig
  with pytest.raises(ValueError, match="task.loss_on_question must be True or False, got 1"):
    TaskConfig(loss_on_question=1)


def test_resume_may_change_the_evaluation_but_not_the_training_batches(tmp_path):
  train_policy(_tiny_config(), str(tmp_path))
  config = _tiny_config()
  config.task.eval_seed, config.task.max_new_tokens = 2, 4
  assert train_policy(config, str(tmp_path))["step"] == 3
  config.task.batch_size = 8
  with pytest.raises(ValueError, match=r"task.batch_size: 4 there, 8 now\. A resumed run"):
    train_policy(config, str(tmp_path))


_DECODE_CFG = ModelConfig(vocab_size=259, num_layers=1, d_model=32, num_heads=2, head_dim=16,
                          d_ff_big=64, d_ff_small=0, max_len=64, duo=False)


def _complete(prompts, max_new_tokens, params=None):
  return evaluate.complete(params, _DECODE_CFG, prompts, ByteTokenizer(), key=jax.random.key(0),
                           max_new_tokens=max_new_tokens,
                           policy=evaluate.SamplingPolicy(temperature=1.0))


def test_every_row_gets_the_whole_max_new_tokens(monkeypatch):
  calls = []

  def fake_sample(params, prompt_BxP, prompt_len_B, key_B, *, cfg, dec):
    calls.append((prompt_BxP.shape, dec.max_new_tokens))
    zeros_BxM = np.zeros((len(key_B), dec.max_new_tokens))
    return decode.SampleOutput(zeros_BxM.astype(np.int32), np.zeros(len(key_B), np.int32),
                               zeros_BxM, zeros_BxM, np.zeros(len(key_B), bool))
  monkeypatch.setattr(decode, "sample", fake_sample)
  # A 10-token prompt (EOS + 9 bytes) and 50 new tokens: 10 + 50 - 1 <= 64. The 64-token
  # bucket alone would have left room for 1; before, the whole batch was cut to that.
  _complete(["a" * 9, "b"], max_new_tokens=50)
  # Rows to a power of two (2); the width capped at 64 - 50 + 1 = 15 >= 10.
  assert calls == [((2, 15), 50)]
  _complete(["a" * 9], max_new_tokens=4)  # the bucket of 64, capped at 64 - 4 + 1
  assert calls[-1] == ((1, 61), 4)


def test_a_prompt_near_the_context_end_gets_the_room_left_and_others_the_whole_budget(
    monkeypatch):
  calls = []

  def fake_sample(params, prompt_BxP, prompt_len_B, key_B, *, cfg, dec):
    calls.append((sorted(np.asarray(prompt_len_B).tolist()), dec.max_new_tokens))
    zeros_BxM = np.zeros((len(key_B), dec.max_new_tokens))
    return decode.SampleOutput(zeros_BxM.astype(np.int32), np.zeros(len(key_B), np.int32),
                               zeros_BxM, zeros_BxM, np.zeros(len(key_B), bool))
  monkeypatch.setattr(decode, "sample", fake_sample)
  # EOS + 20 bytes = 21 tokens leave 64 + 1 - 21 = 44 < 50, rounded down to 32; the 2-token
  # rows keep all 50, in a call of their own.
  _complete(["x", "y" * 20, "z"], max_new_tokens=50)
  assert calls == [([2, 2], 50), ([21], 32)]


def test_context_budget_by_hand():
  assert evaluate.context_budget(10, 50, 64) == 50  # 55 left
  assert evaluate.context_budget(15, 50, 64) == 50  # exactly 50 left
  assert evaluate.context_budget(16, 50, 64) == 32  # 49 left
  assert evaluate.context_budget(301, 224, 512) == 192  # a long rollout prefix of policy_small


def test_a_prompt_leaving_too_little_room_raises_naming_the_lengths():
  # EOS + 40 bytes = 41 tokens leave 64 + 1 - 41 = 24 < 32. Short rows beside it change nothing.
  with pytest.raises(ValueError, match=r"a prompt of 41 tokens leaves 24 new tokens of "
                                       r"model.max_len=64; at least 32"):
    _complete(["x", "y" * 40], max_new_tokens=30)


def test_short_prompts_decode_the_whole_budget_on_the_real_sampler():
  params = Transformer(_DECODE_CFG).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  texts = _complete(["a" * 9, "b"], max_new_tokens=50, params=params["params"])
  # A random byte model stops only at EOS (1 in 259 a step): most rows run past the old cut.
  assert max(len(t) for t in texts) > 1


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


def test_pass_at_k_by_difficulty_counts_known_samples(monkeypatch):
  """A fake sampler right on sample s of problem i iff (i + s) % 4 == 0 (one in four): pass@1
  = 1/4 and pass@4 = 1 by hand, per difficulty."""
  source = ArithmeticSource(size=16, seed=3)

  def solve(params, model_cfg, problems, tokenizer, *, key, max_new_tokens, policy,
            samples_per_problem):
    return [[format_completion(p) if (i + s) % 4 == 0 else "answer: -1\n"
             for s in range(samples_per_problem)] for i, p in enumerate(problems)]

  monkeypatch.setattr(evaluate, "solve", solve)
  by = evaluate.pass_at_k_by_difficulty(None, None, source, None, key=jax.random.key(0),
                                        max_new_tokens=8, samples=4, temperature=0.7,
                                        ks=(1, 2, 4))
  assert set(by) == set(range(1, 9))
  for d in by:
    assert by[d] == pytest.approx({1: 0.25, 2: 0.5, 4: 1.0})
