"""Every path that feeds the policy a prompt encodes it one way: EOS, then the text's ids."""

import types

import numpy as np

from adaptive_jax.policy import data as policy_data
from adaptive_jax.policy import evaluate, lora_fine_tune
from adaptive_jax.policy.prompt import encode_prompt
from adaptive_jax.prm.model import encode_texts
from adaptive_jax.sampler.decode import SamplingPolicy
from adaptive_jax.studies import ias_models
from adaptive_jax.tasks.arithmetic import ArithmeticSource
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from adaptive_jax.tasks.problem import format_prompt

TOK = ByteTokenizer()


def _by_hand(text: str) -> list[int]:
  return [2] + [b + 3 for b in text.encode("utf-8")]  # EOS = 2; byte b has id b + 3


def test_hand_example():
  assert encode_prompt(TOK, "1+1") == [2, 52, 46, 52]


def test_sampling_scoring_fine_tuning_and_training_open_the_same_way(monkeypatch):
  problem = ArithmeticSource(size=1, seed=0)[0]
  expected = _by_hand(format_prompt(problem))
  n = len(expected)
  assert encode_prompt(TOK, format_prompt(problem)) == expected
  assert ias_models.prompt_ids([problem], TOK) == [expected]
  prm_tokens = encode_texts([format_prompt(problem)], max_len=4 * n, tokenizer=TOK)
  assert prm_tokens[0].tolist() == expected
  ids, prompt_len = lora_fine_tune.encode_example(TOK, problem)
  assert (ids[:n], prompt_len) == (expected, n)
  tokens = policy_data._Encode(TOK, max_tokens=4096, loss_on_question=False).map(problem)["tokens"]
  assert tokens[:n].tolist() == expected
  seen = []
  monkeypatch.setattr(evaluate, "sample_rows",
                      lambda params, ids, key, **kw: seen.extend(ids) or np.zeros((len(ids), 0)))
  evaluate.complete(None, types.SimpleNamespace(max_len=512), [format_prompt(problem)], TOK,
                    key=None, max_new_tokens=1,
                    policy=SamplingPolicy(temperature=0.0))
  assert seen == [expected]
