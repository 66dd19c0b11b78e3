"""Beam search: a perfect PRM on a synthetic task, the budget, IAS widths, a real model."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.allocation import ias
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.sampler import beam, decode

# Synthetic task. Prompt [BOS, question id, depth, p in percent]: the solution is `depth` steps,
# each [GOLD, NL] with probability p else [WRONG, NL], then the answer line [A_OK, NL] after
# all-gold steps, [A_BAD, NL] otherwise. After a wrong step the policy may also stop early
# with [A_BAD, EOS].
BOS, EOS, NL, GOLD, WRONG, A_OK, A_BAD = 1, 2, 13, 20, 21, 30, 31
PROMPT_LEN = 4


def _rng(key):
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def synthetic_expand(prefixes, key):
  rng = _rng(key)
  steps = []
  for prefix in prefixes:
    depth, p = prefix[2], prefix[3] / 100
    body = prefix[PROMPT_LEN::2]
    u = rng.random()
    if WRONG in body and u < 0.2:
      steps.append([A_BAD, EOS])
    elif len(body) == depth:
      steps.append([A_OK if all(t == GOLD for t in body) else A_BAD, NL])
    else:
      steps.append([GOLD if u < p else WRONG, NL])
  return steps


def answer(completion):
  return {A_OK: 42, A_BAD: 7}.get(completion[-2]) if len(completion) >= 2 else None


def perfect_score(sequences):
  """Columns (0.1, 0.5, 0.9 quantiles): 1 while the completion is all gold, else 0."""
  ok = [float(WRONG not in s[PROMPT_LEN:] and A_BAD not in s[PROMPT_LEN:]) for s in sequences]
  return np.repeat(np.array(ok)[:, None], 3, axis=1)


def hashed_score(sequences):
  """A fixed pseudo-random probability per sequence, in every column."""
  h = [(sum((i + 1) * t for i, t in enumerate(s)) * 2654435761) % 1009 / 1008 for s in sequences]
  return np.repeat(np.array(h)[:, None], 3, axis=1)


def _logged(fn):
  """fn, and the list of (args, output) of every call."""
  calls = []

  def wrapped(*args):
    out = fn(*args)
    calls.append((args, out))
    return out
  return wrapped, calls


def counter_expand(prefixes, key):
  """Steps that never finish a beam, all different: [fresh token, NL]."""
  del key
  counter_expand.next += len(prefixes)
  return [[counter_expand.next - i, NL] for i in range(len(prefixes))]
counter_expand.next = 100


@pytest.mark.parametrize("p_percent,k,m,all_solved", [(40, 4, 4, True), (20, 2, 2, False)],
                         ids=["easy", "hard"])
def test_perfect_prm_finds_a_correct_path_whenever_one_was_sampled(p_percent, k, m, all_solved):
  prompts = [[BOS, q, 1 + q % 4, p_percent] for q in range(24)]  # depths 1..4
  expand, calls = _logged(synthetic_expand)
  config = beam.BeamConfig(num_beams=k, expansions=m, max_steps=6, step_end_id=NL)
  results = beam.beam_search(prompts, expand, perfect_score, answer, config=config,
                             key=jax.random.key(0))
  # Oracle best sample: some path the search drew reached a correct answer line.
  oracle = np.zeros(len(prompts), bool)
  for (prefixes, _), steps in calls:
    for prefix, step in zip(prefixes, steps):
      oracle[prefix[1]] |= step[0] == A_OK
  correct = np.array([r.answer == 42 for r in results])
  np.testing.assert_array_equal(correct, oracle)
  assert correct.all() == all_solved and correct.any()
  for r in results:
    assert r.score == float(r.answer == 42) and r.steps <= config.max_steps
    # generations_per_step: m per kept live beam, K * M at most, from the recorded calls.
    assert r.generations_per_step[0] == k * m and max(r.generations_per_step) <= k * m
  for q, r in enumerate(results):
    drawn = [sum(p[1] == q for p in prefixes) for (prefixes, _), _ in calls]
    assert r.generations_per_step == tuple(n for n in drawn if n)
    assert r.policy_tokens == 2 * r.generations
  if not all_solved:  # finished beams kept: fewer generations than K * M on some step
    assert min(g for r in results for g in r.generations_per_step) < k * m


def test_fixed_width_budget_is_k_times_m_every_step():
  k, m, steps = 3, 2, 4
  prompts = [[BOS, 0, 9, 50], [BOS, 1, 9, 50, 7]]  # prompt lengths 4 and 5
  expand, expand_calls = _logged(counter_expand)
  score, score_calls = _logged(hashed_score)
  config = beam.BeamConfig(num_beams=k, expansions=m, max_steps=steps, step_end_id=NL)
  results = beam.beam_search(prompts, expand, score, answer, config=config,
                             width=beam.fixed_width(k, m), key=jax.random.key(1))
  assert [len(args[0]) for args, _ in expand_calls] == [2 * k * m] * steps  # one call per step
  assert len(score_calls) == steps  # before steps 1..3, then the last pool
  for prompt, r in zip(prompts, results):
    assert r.generations_per_step == (k * m,) * steps and r.generations == k * m * steps
    assert r.policy_tokens == 2 * k * m * steps and r.steps == steps
    # Every pool (k * m new sequences after each round) is scored once.
    assert r.prm_tokens == sum(k * m * (len(prompt) + 2 * s) for s in range(1, steps + 1))
    assert len(r.completion) == 2 * steps and r.answer is None


def test_worked_example_finished_beam_is_kept_and_draws_nothing():
  # Docstring example: K = 2, M = 3; a finishes, a and c (tie with d: earlier wins) are kept.
  rank = {50: .9, 51: .2, 52: .7, 53: .7, 54: .1, 55: .3, 60: .5, 61: .8, 62: .5}

  def expand(prefixes, key):
    del key
    if len(prefixes) == 6:
      return [[50, EOS]] + [[t, NL] for t in range(51, 56)]
    assert prefixes == [[BOS, 52, NL]] * 3  # c only
    return [[60, NL], [61, NL], [62, NL]]

  def score(sequences):
    return np.array([[0.5, rank[s[-2]], 0.5] for s in sequences])
  config = beam.BeamConfig(num_beams=2, expansions=3, max_steps=2, step_end_id=NL)
  (r,) = beam.beam_search([[BOS]], expand, score, answer, config=config, key=jax.random.key(0))
  # The final pool is a c1 c2 c3: the finished a (.9) passed through and still ranks first.
  assert r.generations_per_step == (6, 3) and r.completion == (50, EOS)
  assert r.score == .9 and r.answer is None


def _closed_n(p, q=0.99):
  return math.ceil(math.log(1 - q) / math.log(1 - p))


def ias_of_k(m_max):
  return lambda p_lower_xK: (int(ias.num_beams(p_lower_xK, m_max=m_max)), m_max)


def ias_of_m(num_beams, m_max):
  return lambda p_lower_xK: (num_beams, int(ias.num_expansions(p_lower_xK, m_max=m_max)))


def test_ias_width_adapters_on_hand_made_scores():
  # m_max = 8: p = (.3, .3, .1) has N = (13, 13, 44): k = 1 fails (8 < 13), k = 2 holds.
  assert ias_of_k(8)(np.array([.3, .3, .1])) == (2, 8)
  assert ias_of_k(8)(np.array([.99, .5])) == (1, 8)  # N(.99) = 1
  # No k qualifies: all candidates, and never more than there are.
  assert ias_of_k(8)(np.array([.01, .01])) == (2, 8)
  assert ias_of_k(8)(np.array([.01])) == (1, 8)
  # IAS-of-M: ceil(N(weakest) / K), capped at m_max.
  assert ias_of_m(4, 8)(np.array([.9, .5, .5, .3])) == (4, math.ceil(13 / 4))
  assert ias_of_m(4, 8)(np.array([.9] * 4)) == (4, 1)
  assert ias_of_m(4, 8)(np.array([.9, .01, .5, .5])) == (4, 8)


@pytest.mark.parametrize("lower", [0.9, 0.3, 0.01])
def test_ias_widths_set_the_generations_of_the_next_step(lower):
  k_max, m_max = 4, 8
  n = _closed_n(lower)
  k = next((k for k in range(1, k_max + 1) if k * m_max >= n), k_max)  # IAS-of-K definition
  m = min(math.ceil(n / k_max), m_max)  # IAS-of-M definition
  seen = []

  def score(sequences):
    rank = hashed_score(sequences)[:, 0]
    return np.stack([np.full(len(sequences), lower), rank, rank], axis=1)
  config = beam.BeamConfig(num_beams=k_max, expansions=m_max, max_steps=2, step_end_id=NL)
  for rule, expected in ((ias_of_k(m_max), k * m_max), (ias_of_m(k_max, m_max), k_max * m)):
    def width(p_lower_xK, rule=rule):
      seen.append(p_lower_xK)
      return rule(p_lower_xK)
    (r,) = beam.beam_search([[BOS, 0]], counter_expand, score, answer, config=config,
                            width=width, key=jax.random.key(2))
    assert r.generations_per_step == (k_max * m_max, expected)
  assert all(p.shape == (k_max,) and (p == lower).all() for p in seen)


def test_width_sees_sorted_candidates_and_never_gets_more_beams_than_candidates():
  seen, answers = [], iter([(100, 1), (1, 1), (100, 1)])

  def width(p_lower_xK):
    seen.append(p_lower_xK)
    return next(answers)
  config = beam.BeamConfig(num_beams=2, expansions=2, max_steps=4, step_end_id=NL)
  (r,) = beam.beam_search([[BOS, 0]], counter_expand, hashed_score, answer, config=config,
                          width=width, key=jax.random.key(3))
  # 4 candidates, the top K = 2 offered: 2 kept, not 100; then 1; then 1 left: 1 kept.
  assert r.generations_per_step == (4, 2, 1, 1)
  assert [len(p) for p in seen] == [2, 2, 1]
  assert all((np.diff(p) <= 0).all() for p in seen)


CFG = ModelConfig(vocab_size=32, num_layers=2, d_model=16, num_heads=2, head_dim=8, d_ff_big=32,
                  d_ff_small=8, max_len=96, duo=False)
REAL_NL, REAL_EOS, REAL_PAD, STEP_TOKENS = 5, 2, 0, 8


@pytest.fixture(scope="module")
def params():
  return nn.meta.unbox(Transformer(CFG).init(jax.random.key(0),
                                             jnp.zeros((1, 4), jnp.int32)))["params"]


def _expander(params, policy):
  return beam.step_expander(params, CFG, max_step_tokens=STEP_TOKENS, policy=policy,
                            newline_id=REAL_NL, eos_id=REAL_EOS, pad_id=REAL_PAD)


def _check_step(prefix, step):
  """Ends at its first stop token, or at the step cap, or at the model's context."""
  stops = [i for i, t in enumerate(step) if t in (REAL_NL, REAL_EOS)]
  if stops:
    assert stops == [len(step) - 1]
  else:
    assert len(step) == min(STEP_TOKENS, CFG.max_len - len(prefix))


def test_step_expander_equals_unbucketed_greedy_decode(params):
  greedy = decode.SamplingPolicy(temperature=0.0)
  # Lengths 3 and 5 (a whole step of room), 91 (room for 5), 96 (none).
  prefixes = [[1, 3, 4], [1, 6, 7, 3, 3], [1] + [3, 4, 6] * 30, [1] * CFG.max_len]
  steps = _expander(params, greedy)(prefixes, jax.random.key(0))
  assert steps[3] == []
  for rows, room in (([0, 1], STEP_TOKENS), ([2], CFG.max_len - 91)):
    prompt_BxP, prompt_len_B = decode.left_pad([prefixes[b] for b in rows])
    dec = decode.DecodeConfig(max_new_tokens=room, policy=greedy,
                              stop_tokens=(REAL_NL, REAL_EOS))
    out = decode.sample(params, prompt_BxP, prompt_len_B,
                        jax.random.split(jax.random.key(0), len(rows)), cfg=CFG, dec=dec)
    for j, b in enumerate(rows):
      assert steps[b] == np.asarray(out.tokens_BxM)[j, :int(out.lengths_B[j])].tolist()
      _check_step(prefixes[b], steps[b])


def test_beam_search_with_a_random_transformer(params):
  expand, calls = _logged(_expander(params, decode.SamplingPolicy(temperature=1.0)))
  config = beam.BeamConfig(num_beams=2, expansions=2, max_steps=3, step_end_id=REAL_NL)
  prompts = [[1, 3, 4], [1, 6, 7, 3]]
  results = beam.beam_search(prompts, expand, hashed_score, lambda c: None, config=config,
                             key=jax.random.key(0))
  ends = set()
  for (prefixes, _), steps in calls:
    for prefix, step in zip(prefixes, steps):
      _check_step(prefix, step)
      ends.add(step[-1] if step[-1] in (REAL_NL, REAL_EOS) else "cap")
  assert REAL_NL in ends and len(ends) > 1  # some beams go on, some finish
  for q, (prompt, r) in enumerate(zip(prompts, results)):
    mine = [(p, s) for (prefixes, _), steps in calls for p, s in zip(prefixes, steps)
            if p[:len(prompt)] == prompt]
    assert r.generations == len(mine) and r.policy_tokens == sum(len(s) for _, s in mine)
    assert r.generations_per_step[0] == 4 and r.steps == len(r.generations_per_step) <= 3
    assert len(r.completion) <= 3 * STEP_TOKENS


def test_bad_inputs_raise_naming_them():
  config = beam.BeamConfig(num_beams=2, expansions=2, max_steps=2, step_end_id=NL)
  run = lambda **kw: beam.beam_search(
      kw.pop("prompts", [[BOS, 0, 2, 50]]), kw.pop("expand", synthetic_expand),
      kw.pop("score", perfect_score), answer, config=kw.pop("config", config),
      key=jax.random.key(0), **kw)
  for field in ("num_beams", "expansions", "max_steps"):
    with pytest.raises(ValueError, match=field):
      beam.BeamConfig(**{"num_beams": 2, "expansions": 2, "max_steps": 2, "step_end_id": NL,
                         field: 0})
  with pytest.raises(ValueError, match="num_beams"):
    beam.fixed_width(0, 2)
  with pytest.raises(ValueError, match="expansions"):
    beam.fixed_width(2, -1)
  with pytest.raises(ValueError, match="prompts"):
    run(prompts=[])
  with pytest.raises(ValueError, match="prompt"):
    run(prompts=[[]])
  for bad in (np.nan, 1.5, -0.1):
    with pytest.raises(ValueError, match="score_fn"):
      run(score=lambda s, bad=bad: np.full((len(s), 3), bad))
  with pytest.raises(ValueError, match="score_fn"):
    run(score=lambda s: np.full((len(s) + 1, 3), 0.5))
  with pytest.raises(ValueError, match="rank_column"):
    run(score=lambda s: np.full((len(s), 1), 0.5))
  with pytest.raises(ValueError, match="expand_fn"):
    run(expand=lambda p, k: synthetic_expand(p, k)[1:])
  with pytest.raises(ValueError, match="width"):
    run(width=lambda p: (1, 3))  # m above config.expansions
  with pytest.raises(ValueError, match="width"):
    run(width=lambda p: (0, 1))
  with pytest.raises(ValueError, match="max_step_tokens"):
    beam.step_expander({}, CFG, max_step_tokens=0, policy=decode.SamplingPolicy(),
                       newline_id=REAL_NL, eos_id=REAL_EOS, pad_id=REAL_PAD)
