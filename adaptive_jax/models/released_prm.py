"""Released process reward models as step scorers: Qwen2.5-Math-PRM and Math-Shepherd.

Qwen2.5-Math-PRM (Hugging Face `Qwen2ForProcessRewardModel`, Qwen/Qwen2.5-Math-PRM-7B and -72B):
the Qwen2 backbone without an LM head, then a score head on the final-normed hidden state of
every position, `score.0` Linear(D, D) + bias, ReLU, `score.2` Linear(D, 2) + bias. A step's
score is softmax(logits)[1], the positive class, read at the "<extra_0>" token that ends the
step (the model card's `make_step_rewards`; the vLLM-derived `qwen2_rm.py`, adapted from Qwen's
`modeling_qwen2_rm.py`, builds the same `score` Sequential and pools at step tag id 151651).

  backbone, head, cfg = released_prm.load_qwen_prm("Qwen2.5-Math-PRM-7B")
  text = released_prm.qwen_prm_text(question, steps)          # tokenize with its tokenizer
  probs_BxT = released_prm.qwen_step_probabilities(backbone, head, cfg, tokens_BxT,
                                                   tokens_BxT == extra_0_id)

Math-Shepherd (peiyi9979/math-shepherd-mistral-7b-prm): a MistralForCausalLM whose LM logits
are read; `safetensors_checkpoint.load` reads it as it is. At each step tag "ки" the score is
softmax over the logits of the good token "+" and the bad token "-", taking "+"; the logits
are read at the tag's own position (the card's `scores[input_id == step_tag_id]`).

  cfg, params = safetensors_checkpoint.load("math-shepherd-mistral-7b-prm")
  text = released_prm.shepherd_text(question, steps)
  probs_BxT = released_prm.shepherd_step_probabilities(params, cfg, tokens_BxT,
                                                       tokens_BxT == tag_id,
                                                       good_id=plus_id, bad_id=minus_id)

Token ids come from each model's own tokenizer; public code quotes "<extra_0>" = 151651 in the
Qwen2.5 vocabulary and, for Math-Shepherd's Mistral tokenizer, "+" = 648, "-" = 387 (from
`encode("+ -")[1:]`) and "ки" = 12902 (the last id of `encode("ки")`), but nothing here relies
on them.

Formats followed (step texts are joined as given; neither adds "Step k:" labels or "\n\n"):
- Qwen2.5-Math-PRM-7B model card (huggingface.co/Qwen/Qwen2.5-Math-PRM-7B, Quick Start):
  messages system "Please reason step by step, and put your final answer within \\boxed{}.",
  user = the query, assistant = "<extra_0>".join(steps) + "<extra_0>", rendered by
  `apply_chat_template(..., tokenize=False, add_generation_prompt=False)`; the card recommends
  "\n\n"-separated steps from Qwen2.5-Math-Instruct. A public script feeding vLLM's
  `Qwen2ForProcessRewardModel` spells the rendered string out: Qwen's ChatML, ending in
  "<extra_0><|im_end|><|endoftext|>" (Qwen's generic template would end "<|im_end|>\n").
  Attention is causal, so the tokens after the last "<extra_0>" change no step score.
- Math-Shepherd: its model card's usage code (copied, e.g., in openr's
  prm/code/finetune_qwen.py) scores f"{question} {output}" with output = the steps, each
  followed by " ки", one per line ("Step 1: ... ки\nStep 2: ... ки"); the
  Math-Shepherd dataset card (huggingface.co/datasets/peiyi9979/Math-Shepherd) shows the same
  "problem Step 1: ... ки Step 2: ... ки" inputs, "ки" marking where a step score is read;
  openr's `_math_shepherd_infer_fn` reads softmax over the logits of "+" and "-" at the
  positions whose token is the tag, taking "+".

The loader reads the backbone with safetensors_checkpoint (`model_config` of the config as a
Qwen2ForCausalLM with tied embeddings, i.e. no unembedding: the PRM has no LM head;
`load_params` leaving the score head's tensors and any `lm_head` to this module), then the
head.

Padding: rows padded on the right read exactly as unpadded (causal attention); left padding
would shift the rotary positions and is not supported.
"""

import contextlib
import functools
import os
import pathlib
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from adaptive_jax.models import safetensors_checkpoint as st
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer

QWEN_PRM_ARCHITECTURE = "Qwen2ForProcessRewardModel"
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_STEP_TOKEN = "<extra_0>"
SHEPHERD_STEP_TAG = "ки"
SHEPHERD_GOOD, SHEPHERD_BAD = "+", "-"
# our head param -> (Hugging Face tensor, torch [out, in] -> our [in, out])
HEAD_TENSORS = {("dense", "kernel"): ("score.0.weight", np.transpose),
                ("dense", "bias"): ("score.0.bias", np.asarray),
                ("out", "kernel"): ("score.2.weight", np.transpose),
                ("out", "bias"): ("score.2.bias", np.asarray)}
NUM_LABELS = 2


def qwen_prm_config(hf: dict, *, dtype: str = "float32", param_dtype: str = "float32",
                    max_len: int | None = None, where: str = "config.json") -> ModelConfig:
  """The backbone's ModelConfig from a Qwen2ForProcessRewardModel config.json: a Qwen2 model
  with tied embeddings, i.e. no unembedding param (the PRM has no LM head; read it with
  `output="hidden"`). Another architecture, or a config field safetensors_checkpoint does not
  implement, raises naming the field."""
  archs = hf.get("architectures")
  if archs != [QWEN_PRM_ARCHITECTURE]:
    raise st.SafetensorsError(f"{where}: architectures = {archs!r}; supported: "
                              f"[{QWEN_PRM_ARCHITECTURE!r}]")
  if hf.get("model_type", "qwen2") != "qwen2":
    raise st.SafetensorsError(f"{where}: model_type = {hf['model_type']!r}; expected 'qwen2'")
  if hf.get("num_labels", NUM_LABELS) != NUM_LABELS:
    raise st.SafetensorsError(f"{where}: num_labels = {hf['num_labels']!r}; supported: "
                              f"{NUM_LABELS}")
  backbone = {**hf, "architectures": ["Qwen2ForCausalLM"], "tie_word_embeddings": True}
  return st.model_config(backbone, dtype=dtype, param_dtype=param_dtype, max_len=max_len,
                         where=where)


def qwen_prm_head_params(tensors: Mapping[str, np.ndarray], d_model: int, *,
                         where: str = "checkpoint") -> dict:
  """The score head from its Hugging Face tensors (`score.0.weight` [D, D], `score.0.bias`
  [D], `score.2.weight` [2, D], `score.2.bias` [2], torch [out, in]) as float32
  {"dense": {"kernel": [D, D], "bias": [D]}, "out": {"kernel": [D, 2], "bias": [2]}}; a missing
  or misshapen tensor raises naming it."""
  expected = _head_shapes(d_model)
  head = {"dense": {}, "out": {}}
  for (layer, kind), (name, convert) in HEAD_TENSORS.items():
    if name not in tensors:
      raise st.SafetensorsError(f"{where}: tensor {name!r} is missing (the score head of "
                                f"{QWEN_PRM_ARCHITECTURE})")
    value = convert(np.asarray(tensors[name], np.float32))
    if value.shape != expected[layer][kind]:
      raise st.SafetensorsError(f"{where}: tensor {name!r} has shape "
                                f"{list(np.shape(tensors[name]))}, which does not give our "
                                f"{layer}/{kind} of shape {list(expected[layer][kind])}")
    head[layer][kind] = jnp.asarray(value)
  return head


def load_qwen_prm(directory: str | os.PathLike, *, dtype: str = "float32",
                  param_dtype: str = "float32", max_len: int | None = None, shardings=None):
  """(backbone params, head params, cfg) of a Qwen2ForProcessRewardModel checkpoint directory
  (config.json + model.safetensors, or shards with model.safetensors.index.json).

  The backbone params are shaped as `Transformer(cfg).init` makes them, in cfg.param_dtype
  (`shardings` places them, as in `safetensors_checkpoint.load_params`); the head is float32
  (`qwen_prm_head_params`). A `lm_head.weight`, if a checkpoint carries one, is not read.
  """
  directory = pathlib.Path(directory)
  cfg = qwen_prm_config(st.read_config(directory), dtype=dtype, param_dtype=param_dtype,
                        max_len=max_len, where=str(directory / "config.json"))
  head_names = {name for name, _ in HEAD_TENSORS.values()}
  backbone = st.load_params(directory, cfg, shardings,
                            others=lambda name: name in head_names or name.startswith("lm_head."))
  files = st.weight_files(directory)
  tensors = {}
  with contextlib.ExitStack() as stack:
    for name in sorted(head_names & set(files)):
      f = stack.enter_context(safe_open(files[name], framework="np"))
      kind = f.get_slice(name).get_dtype()
      if kind not in st.STORAGE_DTYPES:
        raise st.SafetensorsError(f"{files[name]}: tensor {name!r} is stored as {kind}; "
                                  f"supported: {', '.join(st.STORAGE_DTYPES)}")
      tensors[name] = f.get_tensor(name)
  return backbone, qwen_prm_head_params(tensors, cfg.d_model, where=str(directory)), cfg


def _head_shapes(d_model: int) -> dict:
  return {"dense": {"kernel": (d_model, d_model), "bias": (d_model,)},
          "out": {"kernel": (d_model, NUM_LABELS), "bias": (NUM_LABELS,)}}


def _check_head(head_params, d_model: int):
  for layer, kinds in _head_shapes(d_model).items():
    for kind, shape in kinds.items():
      try:
        value = head_params[layer][kind]
      except (KeyError, TypeError):
        raise ValueError(f"head_params[{layer!r}][{kind!r}] is missing; head_params must be "
                         "{'dense': {'kernel', 'bias'}, 'out': {'kernel', 'bias'}}") from None
      if tuple(np.shape(value)) != shape:
        raise ValueError(f"head_params[{layer!r}][{kind!r}] has shape {tuple(np.shape(value))}; "
                         f"expected {shape} for model.d_model = {d_model}")


def _check_inputs(cfg: ModelConfig, tokens_BxT, mask_BxT, mask_name: str):
  tokens_BxT, mask_BxT = jnp.asarray(tokens_BxT), jnp.asarray(mask_BxT)
  if tokens_BxT.ndim != 2 or not jnp.issubdtype(tokens_BxT.dtype, jnp.integer):
    raise ValueError(f"tokens_BxT must be a 2-D integer array [B, T], got shape "
                     f"{tokens_BxT.shape} and dtype {tokens_BxT.dtype}")
  if mask_BxT.shape != tokens_BxT.shape:
    raise ValueError(f"{mask_name} has shape {mask_BxT.shape}; it must equal tokens_BxT's "
                     f"shape {tokens_BxT.shape}")
  if mask_BxT.dtype != jnp.bool_:
    raise ValueError(f"{mask_name} must be boolean, got dtype {mask_BxT.dtype}")
  if tokens_BxT.shape[1] > cfg.max_len:
    raise ValueError(f"tokens_BxT has {tokens_BxT.shape[1]} positions; model.max_len is "
                     f"{cfg.max_len}")
  if cfg.duo:
    raise ValueError("model.duo must be False: released PRMs are dense transformers")
  return tokens_BxT, mask_BxT


def qwen_step_probabilities(backbone_params, head_params, cfg: ModelConfig, tokens_BxT,
                            step_mask_BxT):
  """float32 probs_BxT: at positions where the boolean `step_mask_BxT` is True (the
  "<extra_0>" tokens) the score head's positive-class probability softmax(logits)[1], 0
  elsewhere; one forward pass of the backbone (jitted, cfg static)."""
  tokens_BxT, step_mask_BxT = _check_inputs(cfg, tokens_BxT, step_mask_BxT, "step_mask_BxT")
  _check_head(head_params, cfg.d_model)
  return _qwen_probabilities(backbone_params, head_params, tokens_BxT, step_mask_BxT, cfg)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _qwen_probabilities(backbone_params, head_params, tokens_BxT, step_mask_BxT, cfg):
  h_BxTxD = Transformer(cfg).apply({"params": backbone_params}, tokens_BxT,
                                   output="hidden").astype(jnp.float32)
  dense, out = (jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), head_params[layer])
                for layer in ("dense", "out"))
  a_BxTxD = jax.nn.relu(h_BxTxD @ dense["kernel"] + dense["bias"])
  logits_BxTx2 = a_BxTxD @ out["kernel"] + out["bias"]
  return jnp.where(step_mask_BxT, jax.nn.softmax(logits_BxTx2, axis=-1)[..., 1], 0.0)


def shepherd_step_probabilities(params, cfg: ModelConfig, tokens_BxT, tag_mask_BxT, *,
                                good_id: int, bad_id: int):
  """float32 probs_BxT: at positions where the boolean `tag_mask_BxT` is True (the step tags)
  softmax over the LM logits [good_id, bad_id] there, taking good_id's; 0 elsewhere. One
  forward pass (jitted, cfg static) projecting the final-normed hidden states on the two
  tokens' output rows only, not the whole vocabulary."""
  tokens_BxT, tag_mask_BxT = _check_inputs(cfg, tokens_BxT, tag_mask_BxT, "tag_mask_BxT")
  for name, value in (("good_id", good_id), ("bad_id", bad_id)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
        0 <= value < cfg.vocab_size):
      raise ValueError(f"{name} must be a token id in [0, model.vocab_size = "
                       f"{cfg.vocab_size}), got {value!r}")
  if good_id == bad_id:
    raise ValueError(f"good_id and bad_id must differ, both are {good_id}")
  ids_2 = jnp.asarray([good_id, bad_id], jnp.int32)
  return _shepherd_probabilities(params, tokens_BxT, tag_mask_BxT, ids_2, cfg)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _shepherd_probabilities(params, tokens_BxT, tag_mask_BxT, ids_2, cfg):
  h_BxTxD = Transformer(cfg).apply({"params": params}, tokens_BxT, output="hidden")
  params = nn.meta.unbox(params)
  # Transformer.logits restricted to the two tokens' columns.
  if cfg.tie_embeddings:
    w_Dx2 = params["embed"]["embedding"][ids_2].T
  else:
    w_Dx2 = params["unembed"][:, ids_2]
  logits_BxTx2 = jnp.einsum("btd,dc->btc", h_BxTxD,
                            w_Dx2.astype(cfg.activation_dtype)).astype(jnp.float32)
  return jnp.where(tag_mask_BxT, jax.nn.softmax(logits_BxTx2, axis=-1)[..., 0], 0.0)


def _check_steps(question: str, steps: Sequence[str], marker: str):
  if not isinstance(question, str):
    raise ValueError(f"question must be a string, got {type(question).__name__}")
  if isinstance(steps, str) or not isinstance(steps, Sequence) or not steps:
    raise ValueError(f"steps must be a non-empty sequence of strings, got {steps!r:.80}")
  for i, step in enumerate(steps):
    if not isinstance(step, str):
      raise ValueError(f"steps[{i}] must be a string, got {type(step).__name__}")
  # The marker is where a score is read: inside a text it would add a score.
  for name, text in [("question", question)] + [(f"steps[{i}]", s) for i, s in enumerate(steps)]:
    if marker in text:
      raise ValueError(f"{name} contains the step marker {marker!r}, which would be scored as a "
                       "step end")


def qwen_prm_text(question: str, steps: Sequence[str]) -> str:
  """Qwen2.5-Math-PRM's input for `question` and its solution `steps`: the chat of the model
  card (system prompt QWEN_PRM_SYSTEM, the question, the steps each followed by "<extra_0>")
  rendered in Qwen's ChatML as its tokenizer's chat template does, without a tokenizer:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n{step 1}<extra_0>{step 2}<extra_0><|im_end|><|endoftext|>

  (one line). A step or the question holding "<extra_0>" raises: it would be scored."""
  _check_steps(question, steps, QWEN_STEP_TOKEN)
  response = "".join(step + QWEN_STEP_TOKEN for step in steps)
  return (f"<|im_start|>system\n{QWEN_PRM_SYSTEM}<|im_end|>\n"
          f"<|im_start|>user\n{question}<|im_end|>\n"
          f"<|im_start|>assistant\n{response}<|im_end|><|endoftext|>")


def shepherd_text(question: str, steps: Sequence[str]) -> str:
  """Math-Shepherd's input: question + " " + the steps, each followed by " ки", joined by "\\n"
  ("Q Step 1: ... ки\\nStep 2: ... ки"); its card writes the "Step k: " labels into the
  steps, which this leaves to the caller. A step or the question holding "ки" raises."""
  _check_steps(question, steps, SHEPHERD_STEP_TAG)
  return question + " " + f" {SHEPHERD_STEP_TAG}\n".join(steps) + f" {SHEPHERD_STEP_TAG}"
