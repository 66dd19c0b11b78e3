"""The on-device adaptive loop against the per-question host loop, its limits, and the live
decoder against the replayed pool."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.allocation import online
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.sampler import adaptive, decode, draws, host_loop
from adaptive_jax.sampler.adaptive import Draws, LoopConfig, StopRule
from adaptive_jax.sampler.selection import NO_ANSWER

NUM_Q = 6


def synthetic_draw(data, question_B, slot_B, valid_B, min_confidence_B):
  """A pure function of (question, slot): question q answers 0 with probability p_q, else
  one of 1..3 or nothing; confidence and length random; truncated below the threshold."""
  key_B = jax.vmap(lambda q, n: jax.random.fold_in(jax.random.fold_in(data["key"], q), n))(
      question_B, slot_B)
  u_Bx4 = jax.vmap(lambda k: jax.random.uniform(k, (4,)))(key_B)
  right_B = u_Bx4[:, 0] < data["p_Q"][question_B]
  wrong_B = jnp.floor(u_Bx4[:, 1] * 4).astype(jnp.int32)  # 0 = no answer, else 1..3
  answer_B = jnp.where(right_B, 0, jnp.where(wrong_B == 0, NO_ANSWER, wrong_B))
  confidence_B = u_Bx4[:, 2] + right_B
  truncated_B = valid_B & (confidence_B < min_confidence_B)
  tokens_B = 5 + (u_Bx4[:, 3] * 20).astype(jnp.int32)
  tokens_B = jnp.where(truncated_B, tokens_B // 2, tokens_B)
  return Draws(answer_B=jnp.where(valid_B & ~truncated_B, answer_B, NO_ANSWER),
               scores_BxC=u_Bx4[:, :2], confidence_B=confidence_B,
               tokens_B=jnp.where(valid_B, tokens_B, 0),
               scored_tokens_B=jnp.where(valid_B & ~truncated_B, tokens_B + 3, 0),
               truncated_B=truncated_B)


DATA = {"key": jax.random.key(3), "p_Q": jnp.array([0.95, 0.9, 0.6, 0.4, 0.2, 0.05])}
RULES = {
    "fixed": StopRule(),
    "adaptive_consistency": StopRule("adaptive_consistency", threshold=0.95),
    "deepconf_low": StopRule("deepconf", threshold=0.9, warmup=4, keep_percent=10.0),
    "deepconf_high": StopRule("deepconf", threshold=0.9, warmup=3, keep_percent=90.0),
}
LOOPS = {
    "roomy": LoopConfig(n_max=16, per_round=2, rows=12, num_channels=2),
    "tight": LoopConfig(n_max=16, per_round=3, rows=4, num_channels=2),
    "budget": LoopConfig(n_max=16, per_round=2, rows=8, num_channels=2, token_budget=100,
                         max_sample_tokens=25),
}
TARGET_Q = np.array([16, 3, 16, 9, 0, 16])


@pytest.mark.parametrize("loop", LOOPS.values(), ids=LOOPS.keys())
@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
def test_device_loop_equals_host_loop(rule, loop):
  device = jax.tree.map(np.asarray, adaptive.run(synthetic_draw, DATA, TARGET_Q, rule=rule,
                                                 loop=loop))
  host = host_loop.run_host(synthetic_draw, DATA, TARGET_Q, rule=rule, loop=loop)
  for name in ("drawn_Q", "answers_QxN", "truncated_QxN", "tokens_Q", "scored_tokens_Q",
               "rounds_Q"):
    np.testing.assert_array_equal(getattr(device, name), host[name], err_msg=name)
  np.testing.assert_allclose(device.scores_QxNxC, host["scores_QxNxC"])
  np.testing.assert_allclose(device.confidence_QxN, host["confidence_QxN"])
  np.testing.assert_allclose(device.min_confidence_Q, host["min_confidence_Q"], rtol=1e-6)
  # Limits: never past the target or n_max, nor past the token budget; a finished
  # question's slots beyond what it drew stay empty.
  assert (device.drawn_Q <= TARGET_Q).all() and not device.active_Q.any()
  if loop.token_budget:
    assert (device.tokens_Q <= loop.token_budget).all()
  empty_QxN = np.arange(loop.n_max)[None] >= device.drawn_Q[:, None]
  assert (device.answers_QxN[empty_QxN] == NO_ANSWER).all()
  assert (device.scores_QxNxC[empty_QxN] == 0).all()
  if rule.kind == "fixed" and not loop.token_budget:
    np.testing.assert_array_equal(device.drawn_Q, TARGET_Q)


def test_adaptive_consistency_stops_early_on_easy_questions():
  state = adaptive.run(synthetic_draw, DATA, np.full(NUM_Q, 16), rule=RULES[
      "adaptive_consistency"], loop=LOOPS["roomy"])
  drawn = np.asarray(state.drawn_Q)
  assert drawn[0] <= 6 and drawn[0] < drawn[4], drawn


@pytest.mark.parametrize("bad", [jnp.nan, 1.5, -0.1])
def test_bad_scores_raise_naming_the_score_function(bad):
  def draw(data, question_B, slot_B, valid_B, min_confidence_B):
    d = synthetic_draw(data, question_B, slot_B, valid_B, min_confidence_B)
    return d._replace(scores_BxC=d.scores_BxC.at[:, 1].set(bad))
  with pytest.raises(ValueError, match="score function"):
    adaptive.run(draw, DATA, TARGET_Q, rule=StopRule(), loop=LOOPS["roomy"])


def test_bad_input_names_it():
  with pytest.raises(ValueError, match="target_Q"):
    adaptive.run(synthetic_draw, DATA, np.array([], np.int32), rule=StopRule(),
                 loop=LOOPS["roomy"])
  with pytest.raises(ValueError, match="target_Q"):
    adaptive.run(synthetic_draw, DATA, np.array([17] * NUM_Q), rule=StopRule(),
                 loop=LOOPS["roomy"])
  with pytest.raises(ValueError, match="LoopConfig.n_max must be an integer >= 1, got 0"):
    LoopConfig(n_max=0, per_round=1, rows=1)
  with pytest.raises(ValueError, match="LoopConfig.num_channels must be an integer >= 1, got 1.5"):
    LoopConfig(n_max=4, per_round=1, rows=1, num_channels=1.5)
  with pytest.raises(ValueError, match="LoopConfig.token_budget must be an integer >= 0, got -1"):
    LoopConfig(n_max=4, per_round=1, rows=1, token_budget=-1)
  with pytest.raises(ValueError, match=r"LoopConfig.max_sample_tokens must be >= 1 with a "
                                       r"token_budget \(8\), got 0"):
    LoopConfig(n_max=4, per_round=1, rows=1, token_budget=8)
  with pytest.raises(ValueError, match="Probe.samples must be an integer >= 1, got True"):
    adaptive.Probe(True, lambda *args: None)
  with pytest.raises(ValueError, match="rows"):
    LoopConfig(n_max=4, per_round=4, rows=2)
  with pytest.raises(ValueError, match="kind"):
    StopRule("sometimes")
  with pytest.raises(ValueError, match="StopRule.warmup must be an integer >= 1, got 0"):
    StopRule("deepconf", warmup=0)
  with pytest.raises(ValueError, match="threshold"):
    StopRule("adaptive_consistency", threshold=1.0)


# A tiny random policy: live decoding, with early stops, against the replayed pool.
CFG = ModelConfig(vocab_size=32, num_layers=2, d_model=16, num_heads=2, head_dim=8, d_ff_big=32,
                  d_ff_small=8, max_len=40, duo=False)


def _score(params, tokens_BxT, prompt_len_B, length_B):
  del params
  frac_B = jnp.sum(tokens_BxT > 10, -1) / (prompt_len_B + length_B)
  return jnp.stack([frac_B, 1 - frac_B], -1)


def _live(window):
  dec = decode.DecodeConfig(max_new_tokens=12, policy=decode.SamplingPolicy(1.0),
                            stop_tokens=(3, 4), confidence_top_k=5, confidence_window=window)
  answer_fn = lambda tokens_BxM: jnp.where((tokens_BxM == 7).any(-1), tokens_BxM[:, 0],
                                           NO_ANSWER)
  return draws.LiveDraw(CFG, dec, _score, answer_fn, group_window=4)


def _live_data():
  params = nn.meta.unbox(Transformer(CFG).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  prompt_QxP, prompt_len_Q = decode.left_pad([[1, 5, 9], [1, 3, 8, 8, 2], [1, 12], [1, 20, 21]])
  return {"policy": params["params"], "scorer": None, "key": jax.random.key(5), "score_cost": 1,
          "prompts": draws.Prompts(jnp.asarray(prompt_QxP), jnp.asarray(prompt_len_Q))}


def test_live_decoding_equals_pool_replay_and_host_loop():
  data = _live_data()
  live = _live(window=3)
  rule = StopRule("deepconf", threshold=0.9, warmup=2, keep_percent=50.0)
  loop = LoopConfig(n_max=6, per_round=2, rows=4, num_channels=2)
  target_Q = np.array([6, 6, 4, 6])
  state = jax.tree.map(np.asarray, adaptive.run(live, data, target_Q, rule=rule, loop=loop))
  pool = draws.build_pool(_live(window=0), data, 4, 6, rows=8)
  replay = draws.PoolDraw(confidence_window=3, group_window=4)
  replayed = jax.tree.map(np.asarray, adaptive.run(
      replay, {"pool": pool, "score_cost": 1}, target_Q, rule=rule, loop=loop))
  host = host_loop.run_host(live, data, target_Q, rule=rule, loop=loop)
  assert state.truncated_QxN.any(), "the test needs early stops"
  for name in ("drawn_Q", "answers_QxN", "truncated_QxN", "tokens_Q", "scored_tokens_Q",
               "rounds_Q"):
    np.testing.assert_array_equal(getattr(replayed, name), getattr(state, name), err_msg=name)
    np.testing.assert_array_equal(host[name], getattr(state, name), err_msg=name)
  np.testing.assert_allclose(replayed.scores_QxNxC, state.scores_QxNxC, atol=1e-6)
  np.testing.assert_allclose(replayed.confidence_QxN, state.confidence_QxN, atol=1e-6)


def _probe_target(data, question_Q, answers_QxK, scores_QxKxC, confidence_QxK):
  """Few more samples when the first draws look right and confident, many otherwise."""
  sure_Q = (answers_QxK == 0).all(-1) & (confidence_QxK.min(-1) > 1.2)
  return jnp.where(sure_Q, 2, 10 + question_Q % 3) + (scores_QxKxC[:, 0, 0] > 0.5)


@pytest.mark.parametrize("loop", [LOOPS["roomy"], LOOPS["tight"]], ids=["roomy", "tight"])
@pytest.mark.parametrize("samples", [1, 3])
def test_probe_sets_targets_as_the_host_loop_does(samples, loop):
  probe = adaptive.Probe(samples, _probe_target)
  target_Q = np.full(NUM_Q, 16)
  device = jax.tree.map(np.asarray, adaptive.run(synthetic_draw, DATA, target_Q, rule=StopRule(),
                                                 loop=loop, probe=probe))
  host = host_loop.run_host(synthetic_draw, DATA, target_Q, rule=StopRule(), loop=loop,
                            probe=probe)
  for name in ("target_Q", "drawn_Q", "answers_QxN", "tokens_Q", "rounds_Q"):
    np.testing.assert_array_equal(getattr(device, name), host[name], err_msg=name)
  expected_Q = np.clip(np.asarray(_probe_target(
      DATA, np.arange(NUM_Q), device.answers_QxN[:, :samples],
      device.scores_QxNxC[:, :samples], device.confidence_QxN[:, :samples])), samples, 16)
  np.testing.assert_array_equal(device.drawn_Q, expected_Q)
  assert len(set(device.drawn_Q.tolist())) > 1


def verified_draw(data, question_B, slot_B, valid_B, min_confidence_B):
  """`synthetic_draw` with channel 0 a verifier in quarters: 1 when right, else 0 or 0.25
  (exact in float32, so the device's and the host's priorities tie exactly where they tie)."""
  out = synthetic_draw(data, question_B, slot_B, valid_B, min_confidence_B)
  right_B = out.answer_B == 0
  noise_B = jnp.floor(out.scores_BxC[:, 1] * 2) / 4
  verifier_B = jnp.where(right_B, 1.0, noise_B)
  return out._replace(scores_BxC=jnp.stack([verifier_B, noise_B], -1)
                      * valid_B[:, None].astype(jnp.float32))


BUDGET_DATA = {**DATA, "prior_Q": jnp.array([0.5, 0.5, 0.3, 0.3, 0.1, 0.0])}
ALLOCATIONS = {
    "tight": (online.BudgetAllocation(budget=20, solved_at=0.9, prior_strength=2.0),
              LoopConfig(n_max=16, per_round=2, rows=4, num_channels=2)),
    "hopeless": (online.BudgetAllocation(budget=40, solved_at=0.9, hopeless_below=0.08),
                 LoopConfig(n_max=8, per_round=3, rows=8, num_channels=2)),
    "roomy": (online.BudgetAllocation(budget=200, solved_at=0.5, prior_strength=0.5),
              LoopConfig(n_max=16, per_round=4, rows=32, num_channels=2)),
}


@pytest.mark.parametrize("name", ALLOCATIONS)
def test_budget_allocation_on_device_equals_the_round_by_round_host_loop(name):
  allocation, loop = ALLOCATIONS[name]
  target_Q = np.full(NUM_Q, loop.n_max)
  device = jax.tree.map(np.asarray, adaptive.run(verified_draw, BUDGET_DATA, target_Q,
                                                 rule=StopRule(), loop=loop,
                                                 allocation=allocation))
  host = host_loop.run_host_budget(verified_draw, BUDGET_DATA, target_Q, loop=loop,
                                   allocation=allocation)
  for field in ("drawn_Q", "answers_QxN", "tokens_Q", "scored_tokens_Q", "rounds_Q"):
    np.testing.assert_array_equal(getattr(device, field), host[field], err_msg=field)
  np.testing.assert_array_equal(device.scores_QxNxC, host["scores_QxNxC"])
  # The budget holds, every question drew at least once, and a question stopped early only
  # when solved, hopeless or out of budget.
  assert device.drawn_Q.sum() <= allocation.budget and (device.drawn_Q >= 1).all()
  solved_Q = (device.scores_QxNxC[..., 0] >= allocation.solved_at).any(1)
  assert ((device.drawn_Q == loop.n_max) | solved_Q | (device.drawn_Q.sum() == allocation.budget)
          | (allocation.hopeless_below > 0)).all()
  # Solved questions stop at the round of their first verified sample.
  first_Q = np.argmax(device.scores_QxNxC[..., 0] >= allocation.solved_at, 1)
  assert (device.drawn_Q[solved_Q] <= first_Q[solved_Q] + loop.per_round).all()


def test_budget_allocation_gives_a_hand_computed_order():
  """Requests (2, 2, 1), p = (0.2, 0.6, 0.6), 3 rows: question 1 gets 2, question 2 gets 1."""
  granted = online.grant(jnp.array([2, 2, 1]), jnp.array([0.2, 0.6, 0.6]), 3)
  np.testing.assert_array_equal(granted, [0, 2, 1])
  granted = online.grant(jnp.array([1, 1, 1]), online.priority(jnp.array([0.9, 0.1, 0.5]),
                                                               jnp.array([3, 0, 1])), 2)
  np.testing.assert_array_equal(granted, [1, 1, 0])  # the undrawn question first


def test_budget_allocation_spends_on_the_questions_it_can_solve():
  """Budget 3 per question: questions 0-3 are verified at their first sample and retire; the
  last (p = 0.05, prior 0) scores 0.25 on its first, p = 0.25 / 3 < 0.1: hopeless, retired;
  question 4 (p = 0.2) gets the rest of the rows until its 4th sample is verified."""
  allocation = online.BudgetAllocation(budget=18, solved_at=0.9, hopeless_below=0.1)
  loop = LoopConfig(n_max=16, per_round=2, rows=6, num_channels=2)
  state = adaptive.run(verified_draw, BUDGET_DATA, np.full(NUM_Q, 16), rule=StopRule(),
                       loop=loop, allocation=allocation)
  verifier_QxN = np.asarray(state.scores_QxNxC[..., 0])
  assert (verifier_QxN[:4, 0] == 1).all() and verifier_QxN[5, 0] == 0.25
  first_verified = int(np.argmax(verifier_QxN[4] == 1))
  # Question 4 draws one per round first, then per_round = 2 a round, stopping in the round
  # of its first verified sample.
  assert int(state.drawn_Q[4]) in (first_verified + 1, first_verified + 2)
  np.testing.assert_array_equal(np.asarray(state.drawn_Q)[[0, 1, 2, 3, 5]], 1)


@pytest.mark.parametrize("kwargs, data, message", [
    ({"rule": StopRule("adaptive_consistency")}, BUDGET_DATA, "runs with StopRule"),
    ({}, DATA, r"needs data\['prior_Q'\]"),
    ({"allocation": online.BudgetAllocation(budget=3)}, BUDGET_DATA,
     "budget must be >= the number of questions"),
    ({"allocation": online.BudgetAllocation(budget=30, channel=2)}, BUDGET_DATA,
     "channel must be < loop.num_channels=2"),
])
def test_budget_allocation_rejects_what_it_cannot_run(kwargs, data, message):
  args = {"rule": StopRule(), "allocation": online.BudgetAllocation(budget=30), **kwargs}
  with pytest.raises(ValueError, match=message):
    adaptive.run(verified_draw, data, np.full(NUM_Q, 4),
                 loop=LoopConfig(n_max=4, per_round=2, rows=4, num_channels=2), **args)


@pytest.mark.parametrize("field, value", [("budget", 0), ("solved_at", 1.5),
                                          ("hopeless_below", -0.1), ("prior_strength", 0.0),
                                          ("channel", -1)])
def test_budget_allocation_config_names_its_field(field, value):
  with pytest.raises(ValueError, match=f"BudgetAllocation.{field}"):
    online.BudgetAllocation(**{"budget": 10, field: value})
