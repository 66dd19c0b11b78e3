"""The label-free loop's pieces: prompts without labels, pseudo-label rules against brute force,
the fine-tuning and GRPO updates against hand computations, and the headline's gains."""

import collections
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from adaptive_jax.label_free import gains, pseudo_labels, update
from adaptive_jax.label_free.prompts import UnlabelledPrompt, require_unlabelled, unlabelled
from adaptive_jax.nn import lora
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.policy import logprobs
from adaptive_jax.policy.lora_fine_tune import completion_loss
from adaptive_jax.sampler.selection import NO_ANSWER
from adaptive_jax.studies import label_free_rounds
from adaptive_jax.tasks.arithmetic import ArithmeticSource
from adaptive_jax.tasks.problem import format_prompt


def test_unlabelled_prompt_holds_the_question_only():
  assert [f.name for f in dataclasses.fields(UnlabelledPrompt)] == ["question"]
  source = ArithmeticSource(size=3, seed=5)
  problems = [source[i] for i in range(3)]
  prompts = unlabelled(problems)
  assert [p.question for p in prompts] == [p.question for p in problems]
  assert [format_prompt(p) for p in prompts] == [format_prompt(p) for p in problems]
  for p in prompts:
    for label in ("answer", "steps", "difficulty"):
      assert not hasattr(p, label)
  with pytest.raises(TypeError, match="prompts\\[0\\] must be an UnlabelledPrompt"):
    require_unlabelled(problems)
  with pytest.raises(ValueError, match="at least one"):
    require_unlabelled([])
  # The round's two calls refuse labelled problems before they touch a model.
  with pytest.raises(TypeError, match="UnlabelledPrompt"):
    label_free_rounds.draw_round("majority", None, None, problems, None, {}, None)
  with pytest.raises(TypeError, match="UnlabelledPrompt"):
    label_free_rounds.update_round("grpo", None, None, None, problems, None, None, None)
  with pytest.raises(ValueError, match="arm must be one of"):
    label_free_rounds.draw_round("supervised", None, None, prompts, None, {}, None)


def _brute_majority(answers, drawn):
  counted = [a for a in answers[:drawn] if a != NO_ANSWER]
  if not counted:
    return -1
  counts = collections.Counter(counted)
  top = max(counts.values())
  winner = next(a for a in counted if counts[a] == top)  # tie: the answer seen first
  return list(answers).index(winner)


def _brute_best(answers, scores, drawn, min_score):
  best, index = -np.inf, -1
  for s in range(drawn):
    if answers[s] != NO_ANSWER and scores[s] > best:
      best, index = scores[s], s
  return index if index >= 0 and best >= min_score else -1


def test_pseudo_label_rules_match_brute_force():
  rng = np.random.default_rng(0)
  q, n = 200, 6
  answers = rng.choice([1, 2, 3, NO_ANSWER], size=(q, n), p=[0.3, 0.3, 0.2, 0.2])
  scores = rng.choice([0.1, 0.4, 0.4, 0.9], size=(q, n))  # ties on purpose
  drawn = rng.integers(0, n + 1, q)
  majority = pseudo_labels.majority(answers, drawn)
  best = pseudo_labels.best(answers, scores, drawn, min_score=0.3)
  for i in range(q):
    assert majority[i] == _brute_majority(answers[i], drawn[i]), i
    assert best[i] == _brute_best(answers[i], scores[i], drawn[i], 0.3), i
  # The module doc's worked example.
  a, s = np.array([[7, 3, 3, NO_ANSWER]]), np.array([[0.9, 0.2, 0.4, 0.95]])
  assert pseudo_labels.majority(a).tolist() == [1]
  assert pseudo_labels.best(a, s).tolist() == [0]
  with pytest.raises(ValueError, match="drawn_Q"):
    pseudo_labels.majority(a, np.array([5]))
  with pytest.raises(ValueError, match="scores_QxN"):
    pseudo_labels.best(a, np.array([[0.1, np.nan, 0.2, 0.3]]))


def test_grpo_advantages_by_hand():
  adv = pseudo_labels.advantages(np.array([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5],
                                           [0.9, 0.3, 0.6, 0.6]]))
  np.testing.assert_allclose(adv[0], [1, -1, -1, 1], atol=1e-5)
  assert (adv[1] == 0).all()  # no preference in a group of equal rewards
  std = np.std([0.9, 0.3, 0.6, 0.6])
  np.testing.assert_allclose(adv[2], (np.array([0.9, 0.3, 0.6, 0.6]) - 0.6) / std, rtol=1e-5)
  with pytest.raises(ValueError, match="N >= 2"):
    pseudo_labels.advantages(np.ones((3, 1)))


def test_example_rows_mark_the_completion():
  tokens, mask = update.example_rows([[2, 10, 11], [2, 12]], [[20, 21, 2], [22, 2]], 0,
                                     multiple=8)
  assert tokens.tolist() == [[2, 10, 11, 20, 21, 2, 0, 0], [2, 12, 22, 2, 0, 0, 0, 0]]
  # mask[t] = 1 where token t + 1 is a completion token (the stop token included).
  assert mask.tolist() == [[0, 0, 1, 1, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0]]
  with pytest.raises(ValueError, match="as many prompts as completions"):
    update.example_rows([[2]], [], 0)


def _tiny():
  cfg = ModelConfig(vocab_size=16, d_model=16, num_layers=1, num_heads=2, head_dim=8,
                    d_ff_small=16, d_ff_big=32, max_len=32, duo=False)
  params = Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  return cfg, params


def test_token_logprobs_equal_the_logits():
  cfg, params = _tiny()
  tokens = jax.random.randint(jax.random.key(1), (3, 8), 0, 16)
  logp = np.asarray(logprobs.token_logprobs(cfg, params, tokens))
  logits = np.asarray(Transformer(cfg).apply({"params": params}, tokens), np.float64)
  for b in range(3):
    for t in range(7):
      row = logits[b, t]
      expected = row[tokens[b, t + 1]] - np.log(np.exp(row - row.max()).sum()) - row.max()
      assert abs(logp[b, t] - expected) < 1e-4
  assert (logp[:, -1] == 0).all()


def test_grpo_log_probabilities_follow_the_sampling_temperature():
  cfg, params = _tiny()
  tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 16)
  logits = np.asarray(Transformer(cfg).apply({"params": params}, tokens), np.float64) / 0.5
  logp = np.asarray(logprobs.token_logprobs(cfg, params, tokens, 0.5))
  for b in range(2):
    for t in range(7):
      row = logits[b, t]
      expected = row[tokens[b, t + 1]] - row.max() - np.log(np.exp(row - row.max()).sum())
      assert abs(logp[b, t] - expected) < 1e-4
  # Chunked (GRPO's old and reference passes) equals one pass.
  np.testing.assert_allclose(update._chunked_logprobs(cfg, params, tokens, 0.5, rows=1), logp,
                             atol=1e-6)


def test_grpo_loss_against_numpy():
  cfg, params = _tiny()
  tokens = jax.random.randint(jax.random.key(1), (4, 8), 0, 16)
  mask = np.zeros((4, 8), np.float32)
  mask[:, 2:6] = 1
  mask[3, 2:] = 0
  mask[3, 3] = 1
  adv = np.array([1.0, -0.5, 2.0, -1.0], np.float32)
  # At the policy that drew the samples and the reference: ratio 1, KL 0, loss -mean(A).
  logp = logprobs.token_logprobs(cfg, params, tokens)
  loss, kl = update.grpo_loss(cfg, params, tokens, mask, adv, logp, logp, clip=0.2,
                              kl_weight=0.1)
  assert abs(float(loss) + adv.mean()) < 1e-5 and abs(float(kl)) < 1e-6
  # Away from them: the clipped objective and the k3 KL, per token, by hand.
  rng = np.random.default_rng(0)
  old = np.asarray(logp) + rng.normal(0, 0.3, logp.shape).astype(np.float32)
  ref = np.asarray(logp) + rng.normal(0, 0.3, logp.shape).astype(np.float32)
  loss, kl = update.grpo_loss(cfg, params, tokens, mask, adv, old, ref, clip=0.2, kl_weight=0.1)
  lp = np.asarray(logp, np.float64)
  ratio = np.exp(lp - old)
  pg = -np.minimum(ratio * adv[:, None], np.clip(ratio, 0.8, 1.2) * adv[:, None])
  k3 = np.exp(ref - lp) - (ref - lp) - 1
  per_row = lambda x: (x * mask).sum(1) / mask.sum(1)
  assert abs(float(loss) - per_row(pg + 0.1 * k3).mean()) < 1e-5
  assert abs(float(kl) - per_row(k3).mean()) < 1e-5


def test_updates_move_the_policy_the_right_way():
  cfg, params = _tiny()
  tokens, mask = update.example_rows([[1, 5], [1, 6]], [[7, 8, 2], [9, 10, 2]], 0, multiple=8)
  before = float(completion_loss(cfg, params, tokens, mask))
  tuned, losses = update.fine_tune(params, cfg, tokens, mask, steps=20, batch_size=2,
                                   learning_rate=1e-2, key=jax.random.key(0))
  assert len(losses) == 20 and float(completion_loss(cfg, tuned, tokens, mask)) < 0.5 * before
  # GRPO: a positive advantage raises the row's log-probability, a negative one lowers it.
  seq = lambda p: np.asarray((logprobs.token_logprobs(cfg, p, jnp.asarray(tokens)) * mask).sum(1))
  start = seq(params)
  moved, log = update.grpo(params, params, cfg, tokens, mask, np.array([1.0, -1.0]), steps=5,
                           batch_size=2, learning_rate=1e-2, clip=0.2, kl_weight=0.0,
                           temperature=1.0, key=jax.random.key(0))
  after = seq(moved)
  assert after[0] > start[0] and after[1] < start[1]
  assert len(log["loss"]) == 5 and log["kl"][0] == pytest.approx(0.0, abs=1e-6)
  # The caller's params are not donated away.
  assert float(completion_loss(cfg, params, tokens, mask)) == pytest.approx(before)


def test_lora_updates_move_low_rank_adapters_only():
  """With a LoraSpec the returned params are the start plus rank-r deltas on the adapted
  kernels (norms and embeddings exactly kept), and the first step is full fine-tuning's."""
  cfg, params = _tiny()
  tokens, mask = update.example_rows([[1, 5], [1, 6]], [[7, 8, 2], [9, 10, 2]], 0, multiple=8)
  spec = update.LoraSpec(rank=2, alpha=4.0)
  before = float(completion_loss(cfg, params, tokens, mask))
  tuned, losses = update.fine_tune(params, cfg, tokens, mask, steps=20, batch_size=2,
                                   learning_rate=3e-2, key=jax.random.key(0), lora_spec=spec)
  _, full_losses = update.fine_tune(params, cfg, tokens, mask, steps=1, batch_size=2,
                                    learning_rate=3e-2, key=jax.random.key(0))
  assert losses[0] == pytest.approx(full_losses[0], rel=1e-6)  # B = 0: the start params
  assert float(completion_loss(cfg, tuned, tokens, mask)) < 0.5 * before
  flat_before, flat_after = (traverse_util.flatten_dict(nn.meta.unbox(p))
                             for p in (params, tuned))
  for path, w in flat_before.items():
    delta = np.asarray(flat_after[path]) - np.asarray(w)
    if path[0] == "layers" and path[-1] in lora.INPUT_AXES:
      num_in = lora.INPUT_AXES[path[-1]]
      for layer in delta.reshape(delta.shape[0], -1, int(np.prod(delta.shape[1 + num_in:]))):
        assert 0 < np.linalg.matrix_rank(layer, tol=1e-6) <= 2, path
    else:
      assert not delta.any(), path
  # GRPO with adapters: the first loss is full GRPO's, and it moves the rows the right way.
  seq = lambda p: np.asarray((logprobs.token_logprobs(cfg, p, jnp.asarray(tokens)) * mask).sum(1))
  grpo = functools.partial(update.grpo, params, params, cfg, tokens, mask, np.array([1.0, -1.0]),
                           batch_size=2, learning_rate=3e-2, clip=0.2, kl_weight=0.0,
                           temperature=1.0, key=jax.random.key(0))
  moved, log = grpo(steps=5, lora_spec=spec)
  _, full_log = grpo(steps=1)
  assert log["loss"][0] == pytest.approx(full_log["loss"][0], rel=1e-6)
  after, start = seq(moved), seq(params)
  assert after[0] > start[0] and after[1] < start[1]


@pytest.mark.parametrize("rank, alpha, message", [
    (0, 4.0, "lora rank must be an integer >= 1, got 0"),
    (2, 0.0, "lora alpha must be a finite number > 0, got 0.0")])
def test_bad_lora_spec_is_named(rank, alpha, message):
  with pytest.raises(ValueError, match=message):
    update.LoraSpec(rank=rank, alpha=alpha)


def _record(per_question, val):
  arr = np.asarray(per_question, float)
  value = {"value": float(arr.mean()), "interval": [0.0, 1.0]}
  return {"test": {"per_question": {"pass@1": list(arr)}, "pass@1": value},
          "validation": {"pass@1": {"value": val, "interval": [0.0, 1.0]}}}


def test_headline_gains_by_hand():
  results = {
      "config": {"rounds": 2, "bootstrap_resamples": 500, "seed": 0},
      "start": {"test": {"per_question": {"pass@1": [0.0, 0.0, 0.5, 1.0]}},
                "best_of_n": {"ks": [1, 2, 4], "verifier": [0.375, 0.5, 0.6],
                              "majority": [0.375, 0.45, 0.7]}},
      "arms": {"supervised": [_record([1, 1, 1, 1], 0.9)] * 2,
               "majority": [_record([0, 0, 0, 0], 0.2), _record([1, 0, 0.5, 1], 0.6)],
               "grpo": [_record([0, 0, 1, 1], 0.1), _record([0, 0.5, 0.5, 1], 0.5)],
               # A ceiling, never the reported arm, whatever its validation score.
               "rule_best_of_n": [_record([1, 1, 1, 1], 1.0)] * 2},
  }
  h = gains.headline(results)
  assert h["best_arm"] == "majority"  # validation 0.6 > 0.5, whatever test says
  assert h["label_free_gain"]["value"] == pytest.approx(0.25)
  assert h["supervised_gain"]["value"] == pytest.approx(0.625)
  assert h["ratio"]["value"] == pytest.approx(0.4)
  lo, hi = h["label_free_gain"]["interval"]
  assert 0 <= lo <= 0.25 <= hi <= 0.5  # per-question differences are 1, 0, 0, 0
  assert h["reaches"]["majority"] == {"pass@1": 0.625, "verifier": 4, "majority": 2}
  assert h["reaches"]["grpo"]["verifier"] == 2  # 0.5 >= 0.5 at n = 2, < 0.6 at n = 4
  assert gains.reaches_best_of_n(0.3, results["start"]["best_of_n"], "verifier") is None
  # A curve that falls with n is not reached at its far end alone.
  falling = {"ks": [1, 2, 4, 8], "verifier": [0.188, 0.191, 0.190, 0.172]}
  assert gains.reaches_best_of_n(0.182, falling, "verifier") is None
  assert gains.reaches_best_of_n(0.1905, falling, "verifier") == 1
  assert gains.reaches_best_of_n(0.193, falling, "verifier") == 8
  lo, hi = h["ratio"]["interval"]  # the supervised gain is positive in nearly every resample
  assert 0 <= lo <= 0.4 <= hi <= 1
  lines = gains.lines(results)
  assert lines[0] == "label-free arm (chosen on validation): majority"
  assert lines[1].startswith("label_free_gain = 0.2500 [")
  assert lines[2] == "label_free_gain/supervised_gain = 0.400"
  results["arms"]["supervised"] = [_record([0.0, 0.0, 0.5, 1.0], 0.9)] * 2  # no gain
  assert gains.lines(results)[-1].endswith("did not improve on the start policy)")
  assert gains.headline(results)["ratio"]["interval"] is None
  # With no label-free arm: gains per arm, no headline gain, and the brief still renders.
  only = {**results, "arms": {"rule_best_of_n": results["arms"]["rule_best_of_n"]}}
  h = gains.headline(only)
  assert "label_free_gain" not in h and set(h["gains"]) == {"rule_best_of_n"}
  assert gains.lines(only) == ["label_free_gain = not decided (no label-free arm ran)"]
