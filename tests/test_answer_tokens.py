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
