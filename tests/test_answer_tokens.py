"""The on-device answer parser against the host regex `problem.extract_answer`."""

import random

import jax
import numpy as np

from adaptive_jax.tasks.answer_tokens import MAX_DIGITS, NO_ANSWER, extract_answer_ids
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from adaptive_jax.tasks.problem import extract_answer

TOKENIZER = ByteTokenizer()


def _encode(texts, width=None):
  width = width or max(map(len, texts)) + 2
  tokens_BxM = np.zeros((len(texts), width), np.int32)  # pad id 0 after the text
  for i, text in enumerate(texts):
    ids = TOKENIZER.encode(text)
    tokens_BxM[i, :len(ids)] = ids
  return tokens_BxM


def _host(text):
  answer = extract_answer(text)
  return NO_ANSWER if answer is None or abs(answer) >= 10**MAX_DIGITS else answer


def test_hand_made_rows():
  texts = ["b = 7 + 4 = 11\nanswer: 66\n", "answer: -12\n", "answer:  1,234\n",
           "answer: x\nanswer: 5", "#### 42", "no answer here", "", "answer: 1234567890\n5"]
  expected = [66, -12, 1234, 5, 42, NO_ANSWER, NO_ANSWER, NO_ANSWER]
  np.testing.assert_array_equal(np.asarray(extract_answer_ids(_encode(texts))), expected)


def test_equals_host_parser_on_random_text():
  rng = random.Random(0)
  pieces = ["answer:", "answer: ", "####", " ", "\t", "-", "1", "23", ",", "x", "\n", "7",
            "answer:-", "ans", "#", "00", "999"]
  texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(2000)]
  got = np.asarray(jax.jit(extract_answer_ids)(_encode(texts)))
  np.testing.assert_array_equal(got, [_host(t) for t in texts])


def test_eos_and_pads_after_the_answer_are_ignored():
  tokens = _encode(["answer: 17\n"], width=20)
  tokens[0, 11] = TOKENIZER.eos_id
  tokens[0, 12:] = TOKENIZER.encode("answer: 3")[:8]
  assert int(extract_answer_ids(tokens)[0]) == 17


def test_equals_host_parser_on_smollm2_tokens():
  """SmolLM2's BPE: markers at the start of a line, as the task writes them (answer_tokens.py
  says what a BPE hides: a marker merged into a longer token)."""
  from adaptive_jax.models import smollm2
  from adaptive_jax.policy import pretrained_policy
  tokenizer = pretrained_policy.task_tokenizer(smollm2.load())
  rng = random.Random(1)
  lines = ["answer: 57", "answer:  -3", "answer: 1,234", "answer: x", "#### 42",
           "a = 5 + 3 = 8", "answer:\t12", "answer:    7", "answer: 1234567890", "b = 9", ""]
  texts = ["\n".join(rng.choice(lines) for _ in range(rng.randint(0, 4))) + rng.choice(["", "\n"])
           for _ in range(300)]
  ids = [tokenizer.encode(t) for t in texts]
  tokens_BxM = np.full((len(ids), max(map(len, ids)) + 2), tokenizer.pad_id, np.int32)
  for i, row in enumerate(ids):
    tokens_BxM[i, :len(row)] = row
  got = np.asarray(jax.jit(extract_answer_ids, static_argnums=1)(tokens_BxM, tokenizer))
  np.testing.assert_array_equal(got, [_host(t) for t in texts])
  # The limit the module states: ":-" is one BPE token, so "answer:-8" hides its marker.
  merged = np.array([tokenizer.encode("answer:-8")], np.int32)
  assert int(extract_answer_ids(merged, tokenizer)[0]) == NO_ANSWER and _host("answer:-8") == -8
