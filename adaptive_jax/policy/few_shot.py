"""A pretrained chat LM (SmolLM2-135M-Instruct) as a few-shot policy: prompt, sample, check.

The prompt holds k worked examples (other problems' gold solutions in the task's exact format,
`problem.format_prompt` + `format_completion`), then the question. Two formats:

  plain: "question: <shot 1>\\n<steps>\\nanswer: 26\\nquestion: <shot 2>...\\nanswer: 7\\n"
         "question: <the problem>\\n"
  chat:  the chat template, one user turn (format_prompt) and one assistant turn
         (format_completion) per shot, then the problem as a user turn and the assistant's
         opening "<|im_start|>assistant\\n"

Stop rules on the BPE's tokens: end of answer is the token that follows an answer line in
the prompt, so the model learns it in context as the byte policy learned EOS: plain, "question"
(the next example begins); chat, "<|im_end|>". It is dropped from the completion, which is then
the solution text, scored by the task's own checker (`source.check`). End of step is any token
holding a newline (`step_end_ids`: "\\n", "\\n\\n", "\\n   ", ...).

Every prompt of a batch shares its shots, so their keys and values are computed once
(`decode.prefill_prefix`) and only each question runs per row.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import numpy as np

from adaptive_jax.models.smollm2 import Pretrained
from adaptive_jax.sampler import decode
from adaptive_jax.tasks import answer_tokens
from adaptive_jax.tasks.problem import QUESTION_PREFIX, Problem, format_completion, format_prompt

FORMATS = ("plain", "chat")


@dataclasses.dataclass(frozen=True)
class FewShotPrompt:
  """How a question is put to the model: the prompt format and the worked examples."""
  format: str
  shots: tuple[Problem, ...]

  def __post_init__(self):
    if self.format not in FORMATS:
      raise ValueError(f"prompt format must be one of {FORMATS}, got {self.format!r}")
    object.__setattr__(self, "shots", tuple(self.shots))

  def prefix(self, model: Pretrained) -> str:
    """The text every question's prompt starts with (the shots, in either format)."""
    if not self.shots:  # the chat template's system turn comes with the first message
      return ""
    if self.format == "plain":
      return "".join(format_prompt(s) + format_completion(s) for s in self.shots)
    # The template renders messages one by one, so the prefix of the shots is the prompt's.
    return model.chat_prompt(self._shot_messages(), add_generation_prompt=False)

  def text(self, problem: Problem, model: Pretrained) -> str:
    """The whole prompt for `problem`: after it, the model writes the solution."""
    if self.format == "plain":
      return self.prefix(model) + format_prompt(problem)
    return model.chat_prompt(
        [*self._shot_messages(), {"role": "user", "content": format_prompt(problem)}])

  def _shot_messages(self) -> list[dict]:
    return [m for s in self.shots for m in (
        {"role": "user", "content": format_prompt(s)},
        {"role": "assistant", "content": format_completion(s)})]


def end_of_answer_id(model: Pretrained, prompt_format: str) -> int:
  """The token that follows every answer line of the shots: where a completion stops."""
  if prompt_format == "chat":
    return model.end_of_turn_id
  first = model.tokenizer.encode(QUESTION_PREFIX)[0]
  if model.tokenizer.decode([first]) != QUESTION_PREFIX.split(":")[0]:
    raise ValueError(f"{QUESTION_PREFIX!r} does not begin with a whole-word token on this "
                     f"tokenizer: no token can end a plain completion")
  return first


def step_end_ids(model: Pretrained) -> tuple[int, ...]:
  """Every token whose text holds a newline: the end of a step (one line) on this BPE."""
  return answer_tokens.step_end_ids(model.tokenizer)


def completion_text(model: Pretrained, tokens_M, length: int, end_id: int) -> str:
  """The decoded first `length` new tokens, less a final end-of-answer token `end_id`."""
  tokens = [int(t) for t in np.asarray(tokens_M)[:length]]
  return model.tokenizer.decode(tokens[:-1] if tokens and tokens[-1] == end_id else tokens)


def encode_prompts(model: Pretrained, prompt: FewShotPrompt,
                   problems: Sequence[Problem]) -> tuple[list[int], list[list[int]]]:
  """(prefix ids, each problem's prompt ids); ValueError unless every prompt starts with the
  prefix's ids and adds at least one token (the prefix ends where a BPE piece ends)."""
  prefix_ids = model.tokenizer.encode(prompt.prefix(model))
  ids = [model.tokenizer.encode(prompt.text(p, model)) for p in problems]
  for row in ids:
    if len(row) <= len(prefix_ids) or row[:len(prefix_ids)] != prefix_ids:
      raise ValueError("a prompt's tokens do not start with its shots' tokens; the shared "
                       "prefix must end at a token boundary")
  return prefix_ids, ids


def solve(model: Pretrained, prompt: FewShotPrompt, problems: Sequence[Problem], *, key,
          max_new_tokens: int, policy: decode.SamplingPolicy = decode.SamplingPolicy(0.0),
          samples_per_problem: int = 1, width_bucket: int = 64) -> list[list[str]]:
  """Completions [problem][sample] in one batch, on device, each stopped at its end of answer.

  Prompt width is rounded up to `width_bucket` tokens and rows to a power of two, so batches
  of varied questions reuse a few compiled decodes.
  """
  prefix_ids, ids = encode_prompts(model, prompt, problems)
  ids = [row for row in ids for _ in range(samples_per_problem)]
  num = len(ids)
  ids += [ids[0]] * (2 ** int(np.ceil(np.log2(num))) - num)
  prompt_BxP, prompt_len_B = decode.left_pad(ids)
  width = -(-prompt_BxP.shape[1] // width_bucket) * width_bucket
  prompt_BxP = np.pad(prompt_BxP, ((0, 0), (width - prompt_BxP.shape[1], 0)))
  end_id = end_of_answer_id(model, prompt.format)
  dec = decode.DecodeConfig(max_new_tokens=max_new_tokens, policy=policy, stop_tokens=(end_id,))
  prefix_cache = _prefill(model.params, np.asarray(prefix_ids, np.int32),
                          cfg=model.cfg) if prefix_ids else None
  out = decode.sample(model.params, prompt_BxP, prompt_len_B, jax.random.split(key, len(ids)),
                      prefix_cache=prefix_cache, cfg=model.cfg, dec=dec)
  tokens_BxM, lengths_B = np.asarray(out.tokens_BxM), np.asarray(out.lengths_B)
  texts = [completion_text(model, tokens_BxM[b], lengths_B[b], end_id)
           for b in range(num)]
  return [texts[i:i + samples_per_problem] for i in range(0, num, samples_per_problem)]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _prefill(params, prefix_L, *, cfg):
  return decode.prefill_prefix(cfg, decode.DecodeConfig(max_new_tokens=1), params, prefix_L)


def gold_tokens(model: Pretrained, problem: Problem) -> int:
  """Tokens of the gold completion and its end-of-answer token: a correct solution's length."""
  return len(model.tokenizer.encode(format_completion(problem))) + 1
