"""The label-free study end to end on a tiny policy and verifier: every arm, rounds, the
learning-rate choice on validation, equal sampling, labels kept out, resumption, the report."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from adaptive_jax.figures import label_free as label_free_figures
from adaptive_jax.label_free import gains
from adaptive_jax.label_free.prompts import UnlabelledPrompt, unlabelled
from adaptive_jax.studies import label_free_rounds, label_free_study
from adaptive_jax.tasks import step_checker
from adaptive_jax.tasks.arithmetic import ArithmeticSource
from adaptive_jax.tasks.problem import format_completion
from benchmarks import label_free as label_free_benchmark
from configs import label_free_small


@pytest.fixture(scope="module")
def workdirs(policy_and_calibration_workdirs):
  return policy_and_calibration_workdirs


def _config(policy_dir, calibrate_dir):
  config = label_free_small.get_config()
  config.policy_workdir, config.calibrate_workdir = policy_dir, calibrate_dir
  lf = config.label_free
  lf.rounds, lf.prompts_per_round, lf.validation_questions, lf.test_questions = 2, 4, 4, 6
  lf.difficulties = (1, 2)
  lf.samples_per_prompt, lf.budget_n_max, lf.eval_samples = 2, 4, 2
  lf.steps, lf.batch_size, lf.max_new_tokens, lf.rows = 2, 2, 12, 8
  lf.learning_rates, lf.grpo_learning_rates = (1e-4, 1e-3), (1e-4,)
  lf.bootstrap_resamples, lf.best_of_n_orders = 50, 3
  return config


@pytest.fixture(scope="module")
def study(workdirs, tmp_path_factory):
  seen = []
  real_draw, real_update = label_free_rounds.draw_round, label_free_rounds.update_round

  def spy_draw(arm, params, models, prompts, *args):
    seen.append(("draw", arm, [type(p) for p in prompts], len(prompts)))
    return real_draw(arm, params, models, prompts, *args)

  def spy_update(arm, params, start, models, prompts, *args):
    seen.append(("update", arm, [type(p) for p in prompts], len(prompts)))
    return real_update(arm, params, start, models, prompts, *args)

  workdir = str(tmp_path_factory.mktemp("label_free"))
  label_free_rounds.draw_round, label_free_rounds.update_round = spy_draw, spy_update
  try:
    results = label_free_study.run_label_free_study(_config(*workdirs), workdir)
  finally:
    label_free_rounds.draw_round, label_free_rounds.update_round = real_draw, real_update
  return results, workdir, seen


def test_every_arm_runs_every_round(study):
  results, workdir, seen = study
  assert list(results["arms"]) == list(label_free_study.ARMS)
  for arm, records in results["arms"].items():
    assert [r["round"] for r in records] == [1, 2]
    for rec in records:
      for split, q in (("validation", 4), ("test", 6)):
        metrics = rec[split]
        assert len(metrics["per_question"]["pass@1"]) == q
        for name in ("pass@1", "greedy_pass@1", "pass@2", "distinct_answers", "reward_brier"):
          lo, hi = metrics[name]["interval"]
          assert lo <= metrics[name]["value"] <= hi
        for d, by in metrics["by_difficulty"].items():  # each difficulty's own interval
          of_d = [x for x, dd in zip(metrics["per_question"]["pass@1"],
                                     metrics["per_question"]["difficulty"]) if dd == int(d)]
          assert by["pass@1"]["value"] == pytest.approx(np.mean(of_d))
          lo, hi = by["pass@2"]["interval"]
          assert lo <= by["pass@2"]["value"] <= hi
      # An arm whose samples give no training row (a 3-step policy rarely answers) skips it.
      assert (rec["flops"]["training"] > 0) == (rec["train_rows"] > 0)
      assert rec["train_rows"] > 0 or arm not in ("supervised", "grpo")
      assert (rec["flops"]["sampling"] > 0) == (arm != "supervised")
    # Round 1 tried every learning rate of the arm on validation; round 2 kept the choice.
    rates = (1e-4,) if arm == "grpo" else (1e-4, 1e-3)
    if len(rates) > 1:
      choice = records[0]["learning_rate_choice"]
      assert set(choice) == {f"{r:g}" for r in rates}
      assert choice[f"{records[0]['learning_rate']:g}"] == max(choice.values())
    assert records[1]["learning_rate"] == records[0]["learning_rate"]
  # Label-free arms saw UnlabelledPrompts only, 4 per round; one draw per round, one update
  # per learning rate tried (2 in round 1).
  assert {t for _, _, types, _ in seen for t in types} == {UnlabelledPrompt}
  assert sorted({arm for _, arm, _, _ in seen}) == sorted(label_free_rounds.ARMS)
  assert [call for call, arm, _, _ in seen if arm == "majority"] == ["draw", "update", "update",
                                                                     "draw", "update"]
  for arm in label_free_rounds.ARMS:
    drawn = [r["samples_drawn"] for r in results["arms"][arm]]
    assert all(d == 4 * 2 for d in drawn) or arm == "budget_best_of_n"
  bon = results["start"]["best_of_n"]
  assert bon["ks"] == [1, 2] and all(0 <= a <= 1 for a in bon["verifier"] + bon["majority"])
  assert json.load(open(os.path.join(workdir, "results.json")))["headline"] == results["headline"]


def test_budget_arm_spends_at_most_the_fixed_arms_samples(study):
  results, _, _ = study
  for rec in results["arms"]["budget_best_of_n"]:
    # Q * N = 8 at most (the allocator buys no sample of zero gain), each prompt 1 to 4.
    assert 4 <= rec["samples_drawn"] <= 8
    assert all(1 <= n <= 4 for n in rec["pseudo_labels"]["samples_by_difficulty"].values())


def test_resumes_without_redrawing(workdirs, study, monkeypatch):
  results, workdir, _ = study
  os.remove(os.path.join(workdir, "results.json"))
  monkeypatch.setattr(label_free_study, "_arm_round",
                      lambda *a: pytest.fail("a finished round ran again"))
  again = label_free_study.run_label_free_study(_config(*workdirs), workdir)
  assert again == results
  # Rounds of another config are never resumed.
  config = _config(*workdirs)
  config.label_free.steps = 3
  with pytest.raises(ValueError, match="label_free.steps changed"):
    label_free_study.run_label_free_study(config, workdir)


def test_report_and_figure(study, tmp_path):
  results, workdir, _ = study
  out = label_free_benchmark.report(os.path.join(workdir, "results.json"))
  assert out[-2].startswith("label_free_gain = ") and "[" in out[-2]
  assert out[-1].startswith("label_free_gain/supervised_gain = ")
  assert out[-3:] == gains.lines(results)
  png = label_free_figures.plot(results, str(tmp_path / "tao.png"))
  assert os.path.getsize(png) > 1000


@pytest.mark.parametrize("field,value,match", [
    ("arms", ("majority", "gold"), "label_free.arms must be distinct names"),
    ("reward", "rule", "label_free.reward"),
    ("loop_seed", 33, "must differ"),
    ("min_score", 1.5, r"label_free.min_score must be a number in \[0, 1\]"),
    ("grpo_kl", float("inf"), "label_free.grpo_kl must be a number in"),
    ("learning_rates", (), "label_free.learning_rates must be a non-empty tuple"),
    ("budget_n_max", 1, "label_free.budget_n_max must be an integer >= 8"),
    ("difficulties", (0,), "label_free.difficulties"),
    ("lora_rank", -1, "label_free.lora_rank must be an integer >= 0"),
    ("lora_alpha", 0.0, "label_free.lora_alpha must be a number > 0"),
])
def test_bad_config_names_the_field(field, value, match):
  values = label_free_small.get_config().label_free.to_dict()
  values[field] = value
  with pytest.raises(ValueError, match=match):
    label_free_study.LabelFreeConfig(**values)


def test_verifier_reward_needs_a_step_verifier(workdirs):
  models = label_free_study.ias_models.load_models(_config(*workdirs))
  with pytest.raises(ValueError, match="step verifier"):
    label_free_rounds.reward_score_fn(dataclasses.replace(models, step_verifier=None), "verifier")


@pytest.mark.parametrize("arm", label_free_rounds.ARMS)
def test_round_trains_on_the_chosen_samples(workdirs, monkeypatch, arm):
  """draw_round and update_round's wiring, with crafted candidates: the rows the update reads
  are each prompt's ids followed by the chosen sample's tokens (GRPO: every sample of a group
  with a spread)."""
  models = label_free_study.ias_models.load_models(_config(*workdirs))
  source = ArithmeticSource(size=2, seed=3, difficulties=(2,))
  problems = [source[0], source[1]]
  prompts = unlabelled(problems)
  n, m, no = 2, 64, label_free_rounds.selection.NO_ANSWER
  # Prompt 0's slot 1 is its gold solution: the one sample the exact checker passes whole.
  gold_ids = models.tokenizer.encode(format_completion(problems[0])) + [models.tokenizer.eos_id]
  drawn = {}

  def fake_draw(live, data, drawn_Q, width, *, rows):
    tokens = np.arange(2 * width * m, dtype=np.int32).reshape(2, width, m) % 40 + 3
    lengths = np.full((2, width), 3)
    tokens[0, 1, :len(gold_ids)], lengths[0, 1] = gold_ids, len(gold_ids)
    answers = np.array([[5, problems[0].answer] + [no] * (width - 2), [no, 4] + [no] * (width - 2)])
    reward = np.array([[0.2, 0.9] + [0.0] * (width - 2), [0.5, 0.1] + [0.0] * (width - 2)])
    drawn.update(Q=np.asarray(drawn_Q), answers=answers, reward=reward)
    return label_free_rounds.Candidates(answers, reward, tokens, lengths, np.asarray(drawn_Q))

  seen = {}

  def fake_fine_tune(params, cfg, tokens, mask, **kwargs):
    seen["tokens"], seen["mask"], seen["lora_spec"] = tokens, mask, kwargs["lora_spec"]
    return params, [1.0]

  def fake_grpo(params, ref, cfg, tokens, mask, advantage, **kwargs):
    seen["tokens"], seen["mask"], seen["advantage"] = tokens, mask, advantage
    seen["temperature"], seen["lora_spec"] = kwargs["temperature"], kwargs["lora_spec"]
    return params, {"loss": [1.0], "kl": [0.0]}

  monkeypatch.setattr(label_free_rounds, "draw", fake_draw)
  monkeypatch.setattr(label_free_rounds.update, "fine_tune", fake_fine_tune)
  monkeypatch.setattr(label_free_rounds.update, "grpo", fake_grpo)
  settings = label_free_study.LabelFreeConfig(samples_per_prompt=n, budget_n_max=4,
                                              lora_rank=4, lora_alpha=8.0).settings(1e-3)
  drawn_round = label_free_rounds.draw_round(arm, models.policy, models, prompts, None, {},
                                             settings)
  out = label_free_rounds.update_round(arm, models.policy, models.policy, models, prompts,
                                       drawn_round, settings, None)
  ids = label_free_study.ias_models.prompt_ids(prompts, models.tokenizer)
  cand = drawn_round.candidates
  if arm == "grpo":
    pairs = [(0, 0), (0, 1), (1, 0), (1, 1)]  # both groups' rewards differ
    np.testing.assert_allclose(seen["advantage"], [-1, 1, 1, -1], atol=1e-4)
    assert seen["temperature"] == settings.temperature == 0.7  # the samples' own
  else:
    # majority: prompt 0 ties its two answers (the first, slot 0), prompt 1 has one answer
    # (slot 1); best: the highest score among answered samples (prompt 1's slot 0 has none).
    chosen = [0, 1] if arm == "majority" else [1, 1]
    if arm == "budget_best_of_n":  # the best of the slots drawn
      chosen = [max((s for s in range(k) if drawn["answers"][q, s] != no),
                    key=lambda s: drawn["reward"][q, s], default=-1)
                for q, k in enumerate(drawn["Q"])]
    if arm == "rule_best_of_n":  # the exact step checker on each sample's text
      reward = np.array([[step_checker.score(p.question, models.tokenizer.decode(
          cand.tokens_QxNxM[q, s, :cand.lengths_QxN[q, s]])) for s in range(n)]
          for q, p in enumerate(problems)])
      np.testing.assert_allclose(cand.reward_QxN, reward)
      assert reward[0, 1] == 1.0 and (np.delete(reward.ravel(), 1) < 1).all()
      chosen = [1, -1]  # only what it passes whole
    assert out.chosen_Q.tolist() == chosen
    pairs = [(q, s) for q, s in enumerate(chosen) if s >= 0]
  for row, (q, s) in enumerate(pairs):
    length = cand.lengths_QxN[q, s]
    expect = ids[q] + cand.tokens_QxNxM[q, s, :length].tolist()
    assert seen["tokens"][row, :len(expect)].tolist() == expect
    assert seen["mask"][row].sum() == length and seen["mask"][row, len(ids[q]) - 1] == 1
  assert len(seen["tokens"]) == len(pairs)
  assert seen["lora_spec"] == label_free_rounds.update.LoraSpec(rank=4, alpha=8.0)
  if arm == "budget_best_of_n":
    assert drawn["Q"].sum() <= 2 * n and (drawn["Q"] >= 1).all()
    assert drawn_round.estimate_Q is not None
  else:
    assert drawn["Q"].tolist() == [n, n]


def test_configs_build_and_match_the_defaults():
  from configs import quick
  small = label_free_study.LabelFreeConfig(**label_free_small.get_config().label_free.to_dict())
  assert small == label_free_study.LabelFreeConfig()  # the dataclass documents the config
  for size in quick.SIZES:
    section = quick.get_config(size).label_free
    cfg = label_free_study.LabelFreeConfig(**section.label_free.to_dict())
    assert cfg.rounds >= 3 and set(cfg.arms) == set(label_free_study.ARMS)
    assert (cfg == small) == (size != "quick")


def test_each_reward_scores_with_its_own_model(workdirs):
  """reward='likelihood' (the shipped config's, run end to end by `study` above) scores each
  round's draws with that round's params; 'verifier' with the calibration study's step
  verifier, through the same draw (its score: the verifier's probability at the last step)."""
  config = _config(*workdirs)
  lf = config.label_free
  assert lf.reward == "likelihood"
  study = label_free_study._Study(config, label_free_study.LabelFreeConfig(**lf))
  moved = {"moved": np.ones(2)}
  assert study.data(moved, study.loop[:2], None)["scorer"] == {"likelihood": moved}
  lf.reward = "verifier"
  study = label_free_study._Study(config, label_free_study.LabelFreeConfig(**lf))
  data = study.data(study.models.policy, study.loop[:2], jax.random.key(0))
  assert data["scorer"] == {"verifier": study.models.step_verifier}
  cand = label_free_rounds.draw(study.sampled, data, np.array([2, 2]), 2, rows=8)
  assert np.all((cand.reward_QxN >= 0) & (cand.reward_QxN <= 1))
