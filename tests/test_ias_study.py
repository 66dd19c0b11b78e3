"""The IAS study end to end on a tiny policy and PRM: every method, compute, matched ratios."""

import dataclasses
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.sampler import decode, draws, host_loop, pool_store
from adaptive_jax.scaling import pass_at_k
from adaptive_jax.studies import ias_eval, ias_models, ias_study, ias_sweep
from adaptive_jax.tasks import arithmetic, step_checker
from adaptive_jax.tasks.problem import format_completion, format_prompt
from benchmarks import ias as ias_benchmark
from configs import ias_small


@pytest.fixture(scope="module")
def workdirs(policy_and_calibration_workdirs):
  return policy_and_calibration_workdirs


def _config(policy_dir, calibrate_dir):
  config = ias_small.get_config()
  config.policy_workdir, config.calibrate_workdir = policy_dir, calibrate_dir
  ias = config.ias
  ias.design_questions, ias.validation_questions, ias.test_questions = 8, 8, 8
  ias.control_questions, ias.design_difficulties, ias.temperatures = 8, (1, 2), (0.7,)
  ias.n_max, ias.fixed_ns, ias.ias_n_maxes, ias.orders = 4, (1, 2, 4), (2, 4), 3
  ias.qs, ias.budgets, ias.online_solved_at = (0.5, 0.99), (1.0, 2.0), (0.5,)
  ias.online_n_maxes = (2, 4)
  ias.per_round, ias.rows, ias.pool_rows, ias.max_new_tokens = 2, 8, 16, 12
  ias.deepconf_warmup, ias.group_window, ias.bootstrap_resamples = 2, 4, 50
  config.regime.n_max_choices = (2, 4)
  config.beam.questions, config.beam.fixed, config.beam.max_steps = 4, ((1, 2), (2, 2)), 3
  config.beam.num_beams, config.beam.expansions, config.beam.max_step_tokens = 2, 2, 8
  return config


# The fake policy's chance that a sample is the gold solution, by difficulty (the 3-step
# policy never answers right: every method would score 0 and every check below hold trivially).
P_GOLD = {1: 0.8, 2: 0.3}
GOLD_CONFIDENCE, WRONG_CONFIDENCE = 0.9, 0.6


def _fake_policy_sample(problems_by_prompt: dict):
  """A LiveDraw.sample stand-in: sample (q, n) is problem q's gold solution when a uniform
  drawn from the sample's own key is below P_GOLD[difficulty], else a wrong line and one of
  three wrong answers; then EOS. Every token has confidence GOLD_ or WRONG_CONFIDENCE."""
  tokenizer = ias_models.TOKENIZER

  def host(prompt_BxP, prompt_len_B, u_B, num_tokens):
    rows = len(u_B)
    tokens_BxM = np.full((rows, num_tokens), tokenizer.pad_id, np.int32)
    lengths_B = np.zeros(rows, np.int32)
    confidence_BxM = np.zeros((rows, num_tokens), np.float32)
    for b in range(rows):
      prompt = tokenizer.decode(prompt_BxP[b, prompt_BxP.shape[1] - prompt_len_B[b]:])
      problem = problems_by_prompt[prompt]
      gold = u_B[b] < P_GOLD[problem.difficulty]
      wrong = problem.answer + 1 + int(u_B[b] * 1e6) % 3
      ids = tokenizer.encode(format_completion(problem) if gold
                             else f"z = 1 + 1 = 2\nanswer: {wrong}\n") + [tokenizer.eos_id]
      assert len(ids) <= num_tokens, (prompt, len(ids))
      tokens_BxM[b, :len(ids)], lengths_B[b] = ids, len(ids)
      confidence_BxM[b, :len(ids)] = GOLD_CONFIDENCE if gold else WRONG_CONFIDENCE
    return tokens_BxM, lengths_B, confidence_BxM

  def sample(self, data, question_B, slot_B, min_confidence_B):
    del min_confidence_B
    prompts = data["prompts"]
    key_B = jax.vmap(lambda q, n: jax.random.fold_in(jax.random.fold_in(data["key"], q), n))(
        question_B, slot_B)
    rows, num_tokens = question_B.shape[0], self.dec.max_new_tokens
    tokens_BxM, lengths_B, confidence_BxM = jax.pure_callback(
        lambda *a: host(*map(np.asarray, a), num_tokens),
        (jax.ShapeDtypeStruct((rows, num_tokens), jnp.int32),
         jax.ShapeDtypeStruct((rows,), jnp.int32),
         jax.ShapeDtypeStruct((rows, num_tokens), jnp.float32)),
        prompts.prompt_QxP[question_B], prompts.prompt_len_Q[question_B],
        jax.vmap(jax.random.uniform)(key_B))
    return decode.SampleOutput(tokens_BxM, lengths_B, jnp.log(jnp.maximum(confidence_BxM, 1e-9)),
                               confidence_BxM, jnp.zeros(rows, bool))
  return sample


@pytest.fixture(scope="module")
def study(workdirs, tmp_path_factory):
  """The study with the fake policy drawing every pool (the beam search keeps the real one)."""
  tmp_path = tmp_path_factory.mktemp("ias")
  problems_by_prompt = {}
  problems = arithmetic.problems

  def registered(size, seed, difficulties):
    out = problems(size, seed, difficulties)
    problems_by_prompt.update({format_prompt(p): p for p in out})
    return out
  config = _config(*workdirs)
  config.ias.max_new_tokens = 56  # a whole difficulty-2 gold solution and its EOS
  config.ias.design_samples = 8  # the design pools twice the test pools' 4
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(arithmetic, "problems", registered)
    patch.setattr(draws.LiveDraw, "sample", _fake_policy_sample(problems_by_prompt))
    results = ias_study.run_ias_study(config, str(tmp_path))
  return results, tmp_path


def test_study_chooses_a_regime_and_runs_every_method(study):
  results, tmp_path = study
  ias = _config("", "").ias
  assert json.loads((tmp_path / "results.json").read_text()) == results
  chosen = results["regime"]
  assert (chosen["lo"], chosen["hi"]) == (1, 2) and chosen["n_max"] in (2, 4)
  assert chosen["described"].startswith("difficulties 1-2, temperature 0.7")
  assert results["design_samples"] == 8
  design, _ = pool_store.load_pool(str(tmp_path / "pools" / "full" / "design_t0.7.npz"))
  assert design.answers_QxN.shape == (8, 8)
  assert results["aggregation"] in ("best:verifier_last", "best:verifier_min",
                                    "vote:verifier_last", "best:likelihood", "vote:likelihood")
  # The online allocator reads the chosen selector's channel mapped to P(correct).
  assert results["online_channel"] == results["aggregation"].split(":")[1] + "_calibrated"
  test = results["test"]
  assert set(test["methods"]) == {
      "ias", "offline", "online", "adaptive_consistency", "deepconf_low", "deepconf_high",
      "probe_confidence", "probe_combined"}
  assert len(test["sweeps"]["ias"]) == 3 * 2 * 2  # estimates x qs x caps
  assert len(test["sweeps"]["online"]) == 2 * 1 * 2  # budgets x solved_at x caps
  assert all(p["samples"] <= p["n_max"] for p in test["sweeps"]["online"])
  # By brute force on the test pool: the fake policy's success rates differ by difficulty.
  compact = ias_study.load_split(str(tmp_path / "pools" / "test.npz"))
  correct_QxN, difficulty_Q = compact.correct_QxN.astype(bool), compact.difficulty_Q
  success = {str(d): correct_QxN[difficulty_Q == d].mean() for d in (1, 2)}
  assert results["success_rate_by_difficulty"] == pytest.approx(success)
  assert success["1"] > success["2"] + 0.4, success  # measured 0.81 and 0.06 (P_GOLD 0.8, 0.3)
  # Fixed N over `orders` random pool orders; coverage is pass@k over every k of the 4 samples.
  # An aggregation's accuracy is at most the coverage of its own orders (a selector picks one
  # of the k samples it drew), equal to it at N = 1 (nothing to select), and below it where
  # the selectors miss.
  orders_QxN = list(pass_at_k.random_orders(*correct_QxN.shape, orders=3, seed=ias.seed))
  for n, by_aggregation in test["fixed"].items():
    k = int(n)
    every_subset = np.mean([[correct_QxN[q, list(s)].any()
                             for s in itertools.combinations(range(4), k)]
                            for q in range(len(correct_QxN))])
    drawn = np.mean([np.take_along_axis(correct_QxN, o, 1)[:, :k].any(1) for o in orders_QxN])
    for name, m in by_aggregation.items():
      assert m["samples"] == k and m["coverage"] == pytest.approx(every_subset)
      if name != "coverage":
        assert m["accuracy"] <= drawn + 1e-9, (n, name)
        assert k > 1 or m["accuracy"] == pytest.approx(drawn), name
  coverage = [test["fixed"][n]["coverage"]["accuracy"] for n in ("1", "2", "4")]
  assert coverage[0] < coverage[1] < coverage[2], coverage
  assert min(m["accuracy"] for m in test["fixed"]["4"].values()) < coverage[2] - 0.1
  for m in test["methods"].values():
    assert 0 < m["accuracy"] <= m["coverage"] and 1 <= m["samples"] <= 4
    lo, hi = m["matched"]["interval"]
    assert 0 < lo <= hi and m["flops"] > 0
  assert any(m["accuracy"] < m["coverage"] for m in test["methods"].values())
  assert set(results["headline"]) == {"ias", "budget", "ias_control"}
  assert set(results["tiers"]["auc_within_difficulty"]) == set(results["channels"])
  assert results["channels"][-2:] == ["likelihood", "rule"]
  assert "verifier_last" in results["channels"]
  beams = results["beam"]["variants"]
  assert set(beams) == {"fixed_K1_M2", "fixed_K2_M2", "ias_of_k", "ias_of_m"}
  # The compact pools recompute the same headline: the benchmark's path.
  lines = ias_benchmark.ratio_lines(str(tmp_path / "pools"))
  assert lines[-3:] == ias_sweep.headline_lines(results)
  assert lines[0] == f"regime: {chosen['described']}"


def test_rule_verifier_scores_the_pool_texts(workdirs, study):
  """The rule channel is step_checker.score of each sample's decoded text: 1.0 only where
  every line is right (the answer included), so a wrong answer scores below 1 and the fake
  policy's gold solutions score 1."""
  results, tmp_path = study
  config = _config(*workdirs)
  full, _ = pool_store.load_pool(str(tmp_path / "pools" / "full" / "test.npz"))
  compact = ias_study.load_split(str(tmp_path / "pools" / "test.npz"))
  problems = arithmetic.problems(8, config.ias.test_seed, range(results["regime"]["lo"],
                                                                results["regime"]["hi"] + 1))
  rule_QxN = compact.pool.scores_QxNxC[..., -1]
  for q, p in enumerate(problems):
    for s in range(4):
      text = ias_models.TOKENIZER.decode(full.tokens_QxNxM[q, s, :full.lengths_QxN[q, s]])
      assert rule_QxN[q, s] == np.float32(step_checker.score(p.question, text))
  correct_QxN = compact.correct_QxN.astype(bool)
  assert correct_QxN.any() and not correct_QxN.all()
  assert (rule_QxN[~correct_QxN] < 1).all() and (rule_QxN[correct_QxN] == 1).all()


def test_missing_calibration_names_the_command(workdirs, tmp_path):
  config = _config(workdirs[0], str(tmp_path / "nothing"))
  with pytest.raises(FileNotFoundError, match="experiments.calibrate"):
    ias_study.run_ias_study(config, str(tmp_path / "out"))


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match="ias.fixed_ns"):
    ias_study.IasConfig(fixed_ns=(0, 2))
  with pytest.raises(ValueError, match="ias.qs"):
    ias_study.IasConfig(qs=(1.0,))
  with pytest.raises(ValueError, match="ias.ias_estimates"):
    ias_study.IasConfig(ias_estimates=("oracle",))
  with pytest.raises(ValueError, match=r"ias.budgets must be .* each >= 1"):
    ias_study.IasConfig(budgets=(0.5, 2.0))
  assert ias_study.IasConfig(online_hopeless_below=0.0).online_hopeless_below == 0.0
  with pytest.raises(ValueError, match="ias.design_seed, validation_seed"):
    ias_study.IasConfig(design_seed=20)
  with pytest.raises(ValueError, match="beam.fixed"):
    ias_study.beam_study.BeamStudyConfig(fixed=((0, 4),))
  with pytest.raises(ValueError, match="ias.deepconf_warmup"):
    ias_study.IasConfig(n_max=4, fixed_ns=(1,), ias_n_maxes=(4,), deepconf_warmup=8)


def test_shipped_config_builds():
  config = ias_small.get_config()
  cfg = ias_study.IasConfig(**config.ias)
  ias_study.beam_study.BeamStudyConfig(**config.beam)
  criteria = ias_study.regime.RegimeCriteria(**config.regime)
  assert cfg.n_max == max(cfg.fixed_ns) == max(criteria.n_max_choices)
  assert cfg.deepconf_warmup < cfg.n_max


def test_regime_budgets_must_be_points_of_the_fixed_curve(workdirs, tmp_path):
  config = _config(*workdirs)
  config.regime.n_max_choices = (3,)
  with pytest.raises(ValueError, match=r"regime.n_max_choices must be points of ias.fixed_ns"):
    ias_study.run_ias_study(config, str(tmp_path))
  config = _config(*workdirs)
  config.ias.design_samples = 2  # below regime.n_max_choices' 4
  with pytest.raises(ValueError, match=r"ias.design_samples must be 0 \(n_max\) or at least"):
    ias_study.run_ias_study(config, str(tmp_path))


def test_likelihood_is_the_geometric_mean_probability_of_the_drawn_tokens():
  """Against each row alone, unpadded, through the model's full forward and a Python sum."""
  from flax import linen as nn

  from adaptive_jax.nn.config import ModelConfig
  from adaptive_jax.nn.transformer import Transformer
  cfg = ModelConfig(vocab_size=32, num_layers=2, d_model=16, num_heads=2, head_dim=8,
                    d_ff_big=32, d_ff_small=8, max_len=24, duo=False)
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  params = params["params"]
  rows = [([1, 5, 9], [7, 3, 2, 4]), ([1, 12], [30]), ([1, 3, 8, 8, 2], [6, 6, 6, 4, 9, 9]),
          ([1, 20], [])]
  width, temperature = 12, 0.7
  tokens_BxT = np.zeros((len(rows), width), np.int32)
  for i, (prompt, drawn) in enumerate(rows):
    tokens_BxT[i, :len(prompt) + len(drawn)] = prompt + drawn
  got_B = ias_models.likelihood(params, cfg, jnp.asarray(tokens_BxT),
                                jnp.array([len(p) for p, _ in rows]),
                                jnp.array([len(d) for _, d in rows]), temperature)
  for i, (prompt, drawn) in enumerate(rows):
    if not drawn:
      assert got_B[i] == 0.0
      continue
    seq = np.array([prompt + drawn], np.int32)
    logits = np.asarray(Transformer(cfg).apply({"params": params}, seq), np.float64)[0]
    total = 0.0
    for t in range(len(prompt), len(prompt) + len(drawn)):
      z = logits[t - 1] / temperature
      total += z[seq[0, t]] - np.log(np.exp(z - z.max()).sum()) - z.max()
    np.testing.assert_allclose(got_B[i], np.exp(total / len(drawn)), rtol=1e-4)


def _synthetic_split(scores_QxN, correct_QxN):
  q, n = scores_QxN.shape
  gold_Q = np.arange(q) + 100
  answers_QxN = np.where(correct_QxN, gold_Q[:, None], -1).astype(np.int32)
  pool = draws.Pool(answers_QxN=answers_QxN, scores_QxNxC=scores_QxN[..., None].astype(np.float32),
                    confidence_QxNxM=np.zeros((q, n, 1), np.float32),
                    lengths_QxN=np.ones((q, n), np.int32), stopped_QxN=np.ones((q, n), bool),
                    prompt_len_Q=np.ones(q, np.int32), tokens_QxNxM=np.zeros((q, n, 1), np.int32))
  return ias_eval.PoolSplit(pool=pool, channels=("likelihood",), gold_Q=gold_Q,
                            difficulty_Q=np.ones(q, int), prompt_tokens_Q=np.ones(q),
                            estimates={}, policy_flops=1.0, prm_flops=1.0)


def test_online_channel_is_mapped_to_the_validation_success_rate():
  """A score of 0.9 on every sample, 30% of them right: the isotonic map reads 0.3; a score that
  separates right (0.8) from wrong (0.6) maps to 1 and 0. Appended as a channel of its own."""
  rng = np.random.default_rng(0)
  correct = rng.random((40, 5)) < 0.3
  flat = _synthetic_split(np.full((40, 5), 0.9), correct)
  np.testing.assert_allclose(ias_sweep.calibrated_channel(flat, "likelihood")(0.9),
                             correct.mean(), atol=1e-6)
  sharp = _synthetic_split(np.where(correct, 0.8, 0.6), correct)
  mapped = ias_sweep.calibrated_channel(sharp, "likelihood")(np.array([0.6, 0.8]))
  np.testing.assert_allclose(mapped, [0.0, 1.0])
  more = ias_sweep.with_channel(sharp, "likelihood_calibrated", correct.astype(float))
  assert more.channels == ("likelihood", "likelihood_calibrated")
  np.testing.assert_array_equal(more.pool.scores_QxNxC[..., 1], correct)
  settings = ias_study.sweep_settings(ias_study.IasConfig(), ("likelihood", "rule"), 16)
  assert ias_sweep.online_channel(settings, "vote:likelihood") == "likelihood"
  with pytest.raises(ValueError, match="online_channel='selected' needs an aggregation"):
    ias_sweep.online_channel(settings, "majority")


def test_likelihood_needs_a_sampling_temperature():
  with pytest.raises(ValueError, match="temperature must be > 0"):
    ias_models.likelihood({}, None, jnp.zeros((1, 4), jnp.int32), jnp.array([2]), jnp.array([2]),
                          0.0)


def test_online_cap_limits_each_question_and_matches_the_host_loop():
  """Scores that never reach solved_at and a budget of 5 per question: with cap 2 every
  question draws exactly 2 (the rest of the budget is left), without a cap the budget is spent;
  the capped run equals the host loop's round-by-round reference with targets of 2."""
  rng = np.random.default_rng(1)
  q, n = 12, 8
  split = _synthetic_split(rng.uniform(0.05, 0.4, (q, n)), rng.random((q, n)) < 0.3)
  split = dataclasses.replace(split, estimates={"combined": np.full(q, 0.3)})
  cfg = ias_study.IasConfig(n_max=n, fixed_ns=(1, 2, 4, 8), ias_n_maxes=(8,), per_round=2,
                            rows=8, budgets=(5.0,), online_solved_at=(0.9,),
                            online_hopeless_below=0.0, online_n_maxes=(2, 8))
  settings = dataclasses.replace(ias_study.sweep_settings(cfg, split.channels, 8),
                                 online_channel="likelihood")
  points = ias_sweep._online_settings(settings)
  assert [p["n_max"] for p in points] == [2, 8]
  capped = ias_sweep._run(split, "online", points[0], "best:likelihood", settings)
  np.testing.assert_array_equal(capped.samples_Q, np.full(q, 2))
  uncapped = ias_sweep._run(split, "online", points[1], "best:likelihood", settings)
  assert uncapped.samples_Q.sum() == 5 * q and uncapped.samples_Q.max() > 2
  allocation = ias_sweep.BudgetAllocation(budget=5 * q, channel=0, solved_at=0.9,
                                          hopeless_below=0.0, prior_strength=2.0)
  loop = ias_eval.LoopConfig(n_max=n, per_round=2, rows=8, num_channels=1)
  host = host_loop.run_host_budget(
      ias_eval._REPLAY, {"pool": split.pool, "score_cost": 1,
                         "prior_Q": jnp.full(q, 0.3, jnp.float32)},
      np.full(q, 2, np.int32), loop=loop, allocation=allocation)
  np.testing.assert_array_equal(host["drawn_Q"], capped.samples_Q)
  # Without caps the online family sweeps budgets x solved_at only, each with the pool's size.
  plain = ias_sweep._online_settings(dataclasses.replace(settings, online_n_maxes=()))
  assert plain == [{"per_question": 5.0, "solved_at": 0.9}]
  with pytest.raises(ValueError, match=r"ias.online_n_maxes must be integers in \[1, n_max=8\]"):
    ias_study.IasConfig(n_max=8, fixed_ns=(8,), ias_n_maxes=(8,), online_n_maxes=(16,))
