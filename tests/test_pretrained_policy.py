"""The pretrained-policy path: LoRA fine-tune on gold solutions, the BPE seen as the task's
tokenizer, and the calibration study with a GGUF model as policy and PRM backbone (on a tiny
GGUF written here; tests/test_smollm2.py covers the real file)."""

import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.models import gguf, smollm2
from adaptive_jax.models.gguf_tokenizer import TaskTokenizer, from_gguf
from adaptive_jax.nn import lora
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.policy import lora_fine_tune, pretrained_policy
from adaptive_jax.prm import fit
from adaptive_jax.studies import calibration_study as study
from adaptive_jax.tasks import arithmetic
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from adaptive_jax.tasks.problem import format_completion, format_prompt
from configs import calibrate_smollm2

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import tiny_llama_gguf  # noqa: E402


def test_padded_examples_mask_the_completion_and_eos_only():
  tok = ByteTokenizer()
  problem = arithmetic.generate(0, 1)
  prompt, completion = format_prompt(problem), format_completion(problem)
  tokens, mask = lora_fine_tune.padded_examples(tok, [problem, arithmetic.generate(0, 3)])
  n = 1 + len(prompt) + len(completion) + 1  # EOS, prompt, completion, EOS (bytes)
  assert list(tokens[0, :n]) == ([tok.eos_id] + tok.encode(prompt) + tok.encode(completion)
                                 + [tok.eos_id])
  assert (tokens[0, n:] == tok.pad_id).all()
  # Position t predicts token t + 1: the first masked position is the prompt's last token.
  expected = np.zeros(tokens.shape[1])
  expected[len(prompt):n - 1] = 1
  np.testing.assert_array_equal(mask[0], expected)
  assert mask[0].sum() == len(completion) + 1


def _tiny_cfg():
  return ModelConfig(vocab_size=259, num_layers=2, d_model=32, num_heads=4, head_dim=8,
                     d_ff_big=64, d_ff_small=0, max_len=256, duo=False, num_kv_heads=2)


def test_fine_tune_fits_gold_solutions_and_starts_at_the_base_model():
  cfg, tok = _tiny_cfg(), ByteTokenizer()
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))[
      "params"])
  problems = {d: [arithmetic.generate(j, d) for j in range(2)] for d in (1, 2)}
  ft = lora_fine_tune.FineTuneConfig(steps=60, batch_size=4, learning_rate=1e-2,
                                     warmup_steps=2, lora_rank=4, lora_alpha=8.0)
  untrained = lora.init_lora(params, rank=ft.lora_rank, key=jax.random.key(0))
  merged = lora_fine_tune.merge(params, untrained, ft)
  for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)  # B = 0: the adapters start at the base model
  adapters, losses = lora_fine_tune.fine_tune(params, cfg, tok, problems, ft)
  tokens, mask = lora_fine_tune.padded_examples(tok, problems[2])
  loss = lambda p: float(lora_fine_tune.completion_loss(cfg, p, tokens, mask))
  # An independent read of the loss (the trained params, not the step's): it fell.
  assert loss(lora_fine_tune.merge(params, adapters, ft)) < 0.5 * loss(params)
  assert len(losses) == 60 and losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "fine_tune.steps must be an integer >= 1"),
    ("learning_rate", 0.0, r"fine_tune.learning_rate must be a number in \(0.0, inf\)"),
    ("weight_decay", -1.0, "fine_tune.weight_decay must be >= 0"),
])
def test_bad_fine_tune_config_raises_naming_the_field(field, value, message):
  with pytest.raises(ValueError, match=message):
    lora_fine_tune.FineTuneConfig(**{field: value})


def test_task_tokenizer_on_smollm2():
  bpe = smollm2.load().tokenizer
  tok = TaskTokenizer.from_tokens(bpe, pad="<|endoftext|>", eos="<|im_end|>")
  assert (tok.pad_id, tok.eos_id) == (0, 2)
  text = "question: a = 12 + 7, b = a * 3. b = ?\na = 12 + 7 = 19\nanswer: 57\n"
  ids = tok.encode(text)
  assert ids == bpe.encode(text) and tok.decode(ids) == text
  assert tok.decode([tok.eos_id] + ids + [tok.eos_id, tok.pad_id]) == text  # specials dropped
  with pytest.raises(ValueError, match="encodes to the pad token 0"):
    tok.encode("a<|endoftext|>")
  with pytest.raises(ValueError, match="pad_id and eos_id must differ, both are 2"):
    TaskTokenizer(bpe, pad_id=2, eos_id=2)


def test_gold_prefix_auc_counts_pairs_within_each_difficulty():
  source = arithmetic.ArithmeticSource(2, 3, (2, 3))
  records, scores = [], []
  for q in range(2):
    problem = source[q]
    prompt, lines = format_prompt(problem), format_completion(problem).split("\n")
    for step, (text, score) in enumerate([("", 0.9), (lines[0] + "\n", 0.8),
                                          ("z = 1 + 1 = 2\n", 0.85 if q == 0 else 0.1),
                                          (lines[0] + "\n" + "y = 0\n", 0.2)]):
      records.append({"question_id": q, "difficulty": problem.difficulty, "step": min(step, 2),
                      "text": prompt + text})
      scores.append(score)
  out = study.gold_prefix_auc(np.array(scores), records, source)
  # Difficulty 2: gold 0.8 against wrong 0.85 and 0.2 (step 0 left out): 1 of 2 pairs.
  # Difficulty 3: gold 0.8 against 0.1 and 0.2: both pairs.
  assert out["by_difficulty"]["2"] == {"auc": 0.5, "gold": 1, "wrong": 2}
  assert out["by_difficulty"]["3"] == {"auc": 1.0, "gold": 1, "wrong": 2}
  assert out["mean"] == 0.75


def test_predict_reads_cached_features_and_matches_the_prm_applied_directly(monkeypatch):
  cfg = _tiny_cfg()
  params = fit.init_params(cfg, 0, 8, seed=1)
  records = [{"text": format_prompt(arithmetic.generate(j, 2))} for j in range(5)]
  calls = []
  readout = fit._readout
  monkeypatch.setattr(fit, "_readout", lambda *a, **k: calls.append(1) or readout(*a, **k))
  first = fit.predict(params, cfg, records, batch_size=4)
  assert len(calls) == 2  # two batches
  np.testing.assert_array_equal(fit.predict(params, cfg, records, batch_size=4), first)
  assert len(calls) == 2  # the features came from the cache
  from adaptive_jax.prm.model import PRM, encode_records, probabilities
  direct = probabilities(PRM(cfg).apply({"params": params}, encode_records(records, 256)))
  np.testing.assert_allclose(first, direct, atol=1e-6)
  changed = jax.tree.map(lambda x: x, params)
  changed["backbone"] = jax.tree.map(lambda x: x * 1.01, params["backbone"])
  assert not np.allclose(fit.predict(changed, cfg, records, batch_size=4), first)
  assert len(calls) == 4  # another backbone: computed again


def _tiny_config(gguf_path):
  config = calibrate_smollm2.get_config()
  config.pretrained_policy.gguf = str(gguf_path)
  config.pretrained_policy.difficulties = (1, 2)
  config.pretrained_policy.train_problems = 8
  config.pretrained_policy.eval_problems_per_difficulty = 2
  config.pretrained_policy.max_len = 256
  config.pretrained_policy.max_new_tokens = 8
  config.fine_tune.steps, config.fine_tune.batch_size, config.fine_tune.lora_rank = 2, 2, 2
  config.mc.difficulties = (1, 2)
  config.mc.calibration_questions, config.mc.test_questions = 4, 4
  config.mc.conformal_questions = config.mc.base_questions = config.mc.validation_questions = 2
  config.mc.num_responses, config.mc.num_rollouts, config.mc.max_new_tokens = 2, 2, 8
  config.mc.max_steps = 1
  config.prm.base_max_difficulty = 1
  config.prm.base_steps, config.prm.calibration_steps, config.prm.batch_size = 2, 2, 4
  config.prm.step_verifier_steps = 2
  config.select.learning_rates, config.select.batch_sizes = (1e-3,), (4,)
  return config


def test_study_with_a_gguf_policy_end_to_end(tmp_path):
  gguf_path = tiny_llama_gguf.write(tmp_path / "tiny.gguf")
  config = _tiny_config(gguf_path)
  results = study.run_calibration_study(config, str(tmp_path / "run"))
  assert results["policy"]["source"] == "smollm2"
  assert set(results["policy"]["fine_tune"]["accuracy"]) == {"1", "2"}
  assert len(results["policy"]["fine_tune"]["losses"]) == 2
  assert set(results["target_by_difficulty"]) == {"1", "2"}  # mc.difficulties
  assert set(results["gold_prefix_auc"]) == {"base", "calibrated"}
  # The MC records were written through the BPE: every text encodes, none holds the pad.
  settings = json.loads((tmp_path / "run" / "fine_tune" / "settings.json").read_text())
  assert settings["fine_tune"]["steps"] == 2 and settings["model"] == "tiny.gguf"
  # A rerun loads the adapters (same policy fingerprint: the MC shards resume)...
  again = study.run_calibration_study(config, str(tmp_path / "run"))
  assert again["policy"]["fine_tune"] == results["policy"]["fine_tune"]
  assert again["methods"] == results["methods"]
  # ...and other fine-tune settings stop instead of mixing two policies.
  config.fine_tune.learning_rate = 3e-3
  with pytest.raises(ValueError, match=r"other settings \(fine_tune differ\)"):
    study.run_calibration_study(config, str(tmp_path / "run"))


def test_calibrate_smollm2_config_builds():
  config = calibrate_smollm2.get_config()
  assert config.policy_source == "smollm2" and config.prm.model == "policy"
  pretrained_policy.PretrainedPolicyConfig(**config.pretrained_policy)
  lora_fine_tune.FineTuneConfig(**config.fine_tune)
  study.McConfig(**config.mc)
  study.SelectConfig(**config.select)
  assert set(config.mc.difficulties) == set(config.pretrained_policy.difficulties)


@pytest.mark.parametrize("section, field, value, message", [
    (None, "policy_source", "llama", r"config.policy_source must be one of \('trained', 'smollm2'\)"),
    ("pretrained_policy", "difficulties", (0, 1), "pretrained_policy.difficulties entry"),
    ("pretrained_policy", "eval_seed", 20, "train_seed and .eval_seed must differ"),
    ("fine_tune", "lora_rank", 0, "fine_tune.lora_rank must be an integer >= 1"),
    ("mc", "difficulties", (), "mc.difficulties needs at least one difficulty"),
])
def test_bad_pretrained_config_raises_naming_the_field(tmp_path, section, field, value, message):
  config = _tiny_config(tmp_path / "missing.gguf")
  (config if section is None else config[section])[field] = value
  with pytest.raises(ValueError, match=message):
    study.run_calibration_study(config, str(tmp_path / "out"))


def test_ias_study_with_a_gguf_policy(tmp_path):
  from adaptive_jax.studies import ias_models, ias_study
  from configs import ias_smollm2
  gguf_path = tiny_llama_gguf.write(tmp_path / "tiny.gguf")
  calibrate = _tiny_config(gguf_path)
  study.run_calibration_study(calibrate, str(tmp_path / "calibrate"))
  config = ias_smollm2.get_config()
  config.pretrained_policy, config.fine_tune = calibrate.pretrained_policy, calibrate.fine_tune
  config.calibrate_workdir = str(tmp_path / "calibrate")
  ias = config.ias
  ias.design_difficulties, ias.design_questions = (1, 2), 4
  ias.validation_questions, ias.test_questions, ias.n_max, ias.fixed_ns = 4, 4, 4, (1, 2, 4)
  ias.ias_n_maxes, ias.orders, ias.qs, ias.budgets = (2, 4), 2, (0.5, 0.99), (1.0, 2.0)
  ias.online_solved_at, ias.online_n_maxes = (0.5,), (2, 4)
  config.regime.n_max_choices = (2, 4)
  ias.per_round, ias.rows, ias.pool_rows, ias.max_new_tokens = 2, 8, 16, 12
  ias.deepconf_warmup, ias.group_window, ias.bootstrap_resamples = 2, 4, 50
  config.beam.questions, config.beam.fixed, config.beam.max_steps = 2, ((1, 2),), 2
  config.beam.num_beams, config.beam.expansions, config.beam.max_step_tokens = 2, 2, 8
  models = ias_models.load_models(config)
  # Calibrated under 'head': the base PRM is the calibrated one's base column, in one pass.
  assert models.base_in_calibrated
  tokens_BxT = jnp.asarray(np.random.default_rng(0).integers(3, 200, (3, 12)), jnp.int32)
  args = ({"base": models.base, "calibrated": models.calibrated, "policy": models.policy},
          tokens_BxT, jnp.array([2, 3, 4]), jnp.array([8, 9, 5]))
  one_pass, two_passes = (ias_models.score_fn(models.prm_cfg, models.levels,
                                              models.step_end_ids, shared,
                                              policy_cfg=models.policy_cfg)(*args)
                          for shared in (True, False))
  np.testing.assert_allclose(one_pass, two_passes, atol=1e-6)
  results = ias_study.run_ias_study(config, str(tmp_path / "ias"))
  assert set(results["success_rate_by_difficulty"]) <= {"1", "2"}
  for m in results["test"]["methods"].values():
    assert 1 <= m["samples"] <= 4 and m["accuracy"] <= m["coverage"] and m["flops"] > 0
  assert results["beam"]["variants"]["fixed_K1_M2"]["samples"] > 0


def test_ias_smollm2_config_matches_its_calibration_run():
  from adaptive_jax.studies import ias_study
  from configs import ias_smollm2
  config, calibrate = ias_smollm2.get_config(), calibrate_smollm2.get_config()
  assert config.pretrained_policy == calibrate.pretrained_policy
  assert config.fine_tune == calibrate.fine_tune
  cfg = ias_study.IasConfig(**config.ias)
  ias_study.beam_study.BeamStudyConfig(**config.beam)
  assert set(cfg.design_difficulties) == set(calibrate.mc.difficulties)
  assert cfg.n_max == max(cfg.fixed_ns) == max(config.regime.n_max_choices)


def test_label_free_smollm2_config_matches_its_calibration_run():
  from adaptive_jax.studies import label_free_study
  from configs import label_free_smollm2
  config, calibrate = label_free_smollm2.get_config(), calibrate_smollm2.get_config()
  assert config.pretrained_policy == calibrate.pretrained_policy
  assert config.fine_tune == calibrate.fine_tune
  cfg = label_free_study.LabelFreeConfig(**config.label_free)
  settings = cfg.settings(cfg.learning_rates[0])
  assert settings.lora_spec.rank == calibrate.fine_tune.lora_rank == 16
  assert set(cfg.difficulties) <= set(calibrate.mc.difficulties)
  assert cfg.max_new_tokens <= calibrate.mc.max_new_tokens
  # Every gold solution of the loop's difficulties, and its end token, fits in the samples.
  bpe = from_gguf(gguf.read(smollm2.gguf_path()))
  problems = arithmetic.problems(200, cfg.loop_seed, cfg.difficulties)
  longest = max(len(bpe.encode(format_completion(p))) for p in problems)
  assert longest + 1 <= cfg.max_new_tokens, (longest, cfg.max_new_tokens)


def test_matched_from_scratch_config_shares_the_smollm2_run_sizes():
  from configs import calibrate_small_matched
  matched, smol = calibrate_small_matched.get_config(), calibrate_smollm2.get_config()
  assert matched.get("policy_source", "trained") == "trained"
  for name in ("difficulties", "calibration_questions", "test_questions", "validation_questions",
               "num_responses", "num_rollouts", "calibration_seed", "test_seed"):
    assert matched.mc[name] == smol.mc[name], name
  assert (matched.prm.base_adapter, matched.prm.adapter) == ("head", "head")
  study.McConfig(**matched.mc)
