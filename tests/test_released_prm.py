"""Released PRM heads on tiny random checkpoints written with NumPy (no download, no torch).

A Qwen2ForProcessRewardModel checkpoint (Qwen2 `model.*` tensors, `score.0.*` and `score.2.*`,
no `lm_head`) must give the step probabilities of a NumPy float64 forward: the Hugging Face
reference of test_safetensors_checkpoint with an identity LM head (so it returns the final-normed
hidden states) and the score head written out here. Math-Shepherd's probabilities are the
softmax of our own LM logits [good, bad] at the tags, and also of the reference's logits.
"""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from adaptive_jax.models import released_prm
from adaptive_jax.models import safetensors_checkpoint as st
from adaptive_jax.nn.transformer import Transformer
from tests.test_safetensors_checkpoint import D, V, _hf_config, _hf_forward, _hf_tensors, _write

PRM = "Qwen2ForProcessRewardModel"
STEP, GOOD, BAD = 7, 13, 29  # the tiny vocabulary's "<extra_0>" / "ки", "+" and "-"
PAD = 0
# Row 0 fills all 12 positions; row 1 has 8 real tokens, then pads on the right.
TOKENS_BxT = np.array([[3, 17, 7, 42, 5, 7, 47, 0, 9, 7, 21, 7],
                       [11, 7, 30, 2, 9, 7, 5, 7, PAD, PAD, PAD, PAD]], np.int32)
LENGTHS_B = (12, 8)
MASK_BxT = TOKENS_BxT == STEP


def _prm_tensors(seed=0, head_seed=1, head_std=0.2):
  """A Qwen2 backbone's tensors without lm_head, and the score head, torch [out, in]."""
  tensors = _hf_tensors(_hf_config("qwen2"), seed)
  del tensors["lm_head.weight"]
  rng = np.random.default_rng(head_seed)
  normal = lambda *shape: rng.normal(0, head_std, shape).astype(np.float32)
  return tensors | {"score.0.weight": normal(D, D), "score.0.bias": normal(D),
                    "score.2.weight": normal(2, D), "score.2.bias": normal(2)}


def _prm_config(**change):
  hf = _hf_config("qwen2", use_sliding_window=False, sliding_window=4096)
  return hf | {"architectures": [PRM]} | change


def _reference_hidden(stored, tokens_T):
  """Final-normed hidden states [T, D] of the NumPy Hugging Face forward (float64): its LM
  head replaced by the identity."""
  hf = _hf_config("qwen2", tied=False)
  return _hf_forward(hf, stored | {"lm_head.weight": np.eye(D)}, tokens_T)


def _reference_probabilities(stored, tokens_BxT=TOKENS_BxT, lengths_B=LENGTHS_B, step=STEP):
  """Qwen2ForProcessRewardModel's `score` head and the card's softmax(logits)[..., 1] at the
  step tokens, each row on its unpadded tokens; 0 elsewhere."""
  probs_BxT = np.zeros(tokens_BxT.shape)
  for b, length in enumerate(lengths_B):
    h_TxD = _reference_hidden(stored, tokens_BxT[b, :length])
    a_TxD = np.maximum(h_TxD @ stored["score.0.weight"].T + stored["score.0.bias"], 0)
    logits_Tx2 = a_TxD @ stored["score.2.weight"].T + stored["score.2.bias"]
    e_Tx2 = np.exp(logits_Tx2 - logits_Tx2.max(-1, keepdims=True))
    positive_T = e_Tx2[:, 1] / e_Tx2.sum(-1)
    probs_BxT[b, :length] = np.where(tokens_BxT[b, :length] == step, positive_T, 0)
  return probs_BxT


def test_qwen_prm_gives_the_reference_step_probabilities(tmp_path):
  stored = _write(tmp_path, _prm_config(), _prm_tensors())
  backbone, head, cfg = released_prm.load_qwen_prm(tmp_path)
  assert cfg.qkv_bias and cfg.tie_embeddings and not cfg.scale_embeddings and not cfg.duo
  # Exactly the params Transformer(cfg).init makes: no unembedding (the PRM has no LM head).
  abstract = st._abstract_params(cfg)
  assert jax.tree.structure(abstract) == jax.tree.structure(backbone)
  assert "unembed" not in backbone
  np.testing.assert_array_equal(head["dense"]["kernel"], stored["score.0.weight"].T)
  np.testing.assert_array_equal(head["out"]["kernel"], stored["score.2.weight"].T)
  assert head["out"]["kernel"].shape == (D, 2) and head["out"]["bias"].shape == (2,)

  hidden_TxD = Transformer(cfg).apply({"params": backbone}, jnp.asarray(TOKENS_BxT[:1]),
                                      output="hidden")[0]
  hidden_diff = np.abs(np.asarray(hidden_TxD) - _reference_hidden(stored, TOKENS_BxT[0])).max()
  assert hidden_diff <= 1e-5, hidden_diff

  probs_BxT = released_prm.qwen_step_probabilities(backbone, head, cfg, TOKENS_BxT, MASK_BxT)
  assert probs_BxT.dtype == jnp.float32 and probs_BxT.shape == TOKENS_BxT.shape
  reference_BxT = _reference_probabilities(stored)
  diff = np.abs(np.asarray(probs_BxT) - reference_BxT).max()
  assert diff <= 1e-5, diff
  print(f"hidden max abs diff {hidden_diff:.2e}, step probabilities max abs diff {diff:.2e}")
  # Not saturated: the comparison says something about the head.
  steps = reference_BxT[MASK_BxT]
  assert len(steps) == 7 and steps.min() > 0.02 and steps.max() < 0.98 and steps.std() > 0.05
  assert np.all(np.asarray(probs_BxT)[~MASK_BxT] == 0)


def test_sharded_bf16_prm_with_an_lm_head_reads_the_same_way(tmp_path):
  """Shards go through the index; an lm_head some exports carry is left unread."""
  tensors = _prm_tensors(seed=3) | {"lm_head.weight": np.zeros((V, D), np.float32)}
  stored = _write(tmp_path, _prm_config(), tensors, dtype=ml_dtypes.bfloat16, shards=3)
  backbone, head, cfg = released_prm.load_qwen_prm(tmp_path)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves((backbone, head)))
  probs_BxT = released_prm.qwen_step_probabilities(backbone, head, cfg, TOKENS_BxT, MASK_BxT)
  # The stored bf16 values, upcast exactly: the float32 tolerance holds.
  diff = np.abs(np.asarray(probs_BxT) - _reference_probabilities(stored)).max()
  assert diff <= 1e-5, diff
  _, _, cfg16 = released_prm.load_qwen_prm(tmp_path, param_dtype="bfloat16")
  assert cfg16.param_dtype == "bfloat16"


def test_qwen_prm_head_params_from_tensors():
  tensors = _prm_tensors()
  head = released_prm.qwen_prm_head_params(tensors, D)
  np.testing.assert_array_equal(head["dense"]["bias"], tensors["score.0.bias"])
  np.testing.assert_array_equal(head["out"]["bias"], tensors["score.2.bias"])
  with pytest.raises(ValueError, match=r"checkpoint: tensor 'score.0.bias' is missing"):
    released_prm.qwen_prm_head_params({k: v for k, v in tensors.items() if k != "score.0.bias"},
                                      D)


@pytest.mark.parametrize("family, change", [("mistral", dict(sliding_window=None)),
                                            ("llama", dict(tied=True))])
def test_shepherd_probabilities_are_the_softmax_of_good_and_bad_logits(tmp_path, family, change):
  hf = _hf_config(family, **change)
  stored = _write(tmp_path, hf, _hf_tensors(hf, seed=5))
  cfg, params = st.load(tmp_path)
  probs_BxT = released_prm.shepherd_step_probabilities(params, cfg, TOKENS_BxT, MASK_BxT,
                                                       good_id=GOOD, bad_id=BAD)
  assert probs_BxT.dtype == jnp.float32 and probs_BxT.shape == TOKENS_BxT.shape
  logits_BxTxV = np.asarray(Transformer(cfg).apply({"params": params}, jnp.asarray(TOKENS_BxT)),
                            np.float64)
  pair_BxTx2 = logits_BxTxV[..., [GOOD, BAD]]
  ours_BxT = np.where(MASK_BxT, 1 / (1 + np.exp(pair_BxTx2[..., 1] - pair_BxTx2[..., 0])), 0)
  diff = np.abs(np.asarray(probs_BxT) - ours_BxT).max()
  assert diff <= 1e-6, diff
  # And the independent NumPy forward, row by row on the real tokens (pads after them).
  reference_BxT = np.zeros(TOKENS_BxT.shape)
  for b, length in enumerate(LENGTHS_B):
    pair_Tx2 = _hf_forward(hf, stored, TOKENS_BxT[b, :length])[:, [GOOD, BAD]]
    good_T = 1 / (1 + np.exp(pair_Tx2[:, 1] - pair_Tx2[:, 0]))
    reference_BxT[b, :length] = np.where(MASK_BxT[b, :length], good_T, 0)
  reference_diff = np.abs(np.asarray(probs_BxT) - reference_BxT).max()
  assert reference_diff <= 1e-5, reference_diff
  print(f"{family}: max abs diff {diff:.2e} against our logits, {reference_diff:.2e} against "
        "the NumPy reference")
  assert reference_BxT[MASK_BxT].std() > 0.05


def test_qwen_prm_text_is_the_model_card_chat():
  text = released_prm.qwen_prm_text("What is 1 + 1?", ["1 + 1 = 2.", "The answer is \\boxed{2}."])
  assert text == (
      "<|im_start|>system\n"
      "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
      "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n"
      "<|im_start|>assistant\n1 + 1 = 2.<extra_0>The answer is \\boxed{2}.<extra_0>"
      "<|im_end|><|endoftext|>")
  assert released_prm.qwen_prm_text("Q", ("only step",)).count("<extra_0>") == 1


def test_shepherd_text_tags_every_step():
  text = released_prm.shepherd_text("Janet has 3 eggs. How many?",
                                    ["Step 1: She has 3 eggs.", "Step 2: The answer is: 3"])
  assert text == ("Janet has 3 eggs. How many? Step 1: She has 3 eggs. ки\n"
                  "Step 2: The answer is: 3 ки")
  assert released_prm.shepherd_text("Q", ["S"]) == "Q S ки"


@pytest.mark.parametrize("text, steps, message", [
    (released_prm.qwen_prm_text, "one step", r"steps must be a non-empty sequence of strings"),
    (released_prm.qwen_prm_text, [], r"steps must be a non-empty sequence of strings"),
    (released_prm.qwen_prm_text, ["a", 3], r"steps\[1\] must be a string, got int"),
    (released_prm.qwen_prm_text, ["a<extra_0>b"], r"steps\[0\] contains the step marker "
                                                  r"'<extra_0>'"),
    (released_prm.shepherd_text, ["a", "b ки"], r"steps\[1\] contains the step marker 'ки'"),
])
def test_format_errors_are_named(text, steps, message):
  with pytest.raises(ValueError, match=message):
    text("Q", steps)
  with pytest.raises(ValueError, match=r"question contains the step marker"):
    released_prm.shepherd_text("Q ки", ["a"])


def _load_with(tmp_path, hf, tensors):
  directory = tmp_path / str(len(list(tmp_path.iterdir())))
  _write(directory, hf, tensors)
  return released_prm.load_qwen_prm(directory)


@pytest.mark.parametrize("change, message", [
    (dict(architectures=["Qwen2ForCausalLM"]),
     r"config.json: architectures = \['Qwen2ForCausalLM'\]; supported: "
     r"\['Qwen2ForProcessRewardModel'\]"),
    (dict(architectures=None), r"architectures = None; supported"),
    (dict(model_type="llama"), r"model_type = 'llama'; expected 'qwen2'"),
    (dict(num_labels=1), r"num_labels = 1; supported: 2"),
    (dict(hidden_act="gelu"), r"hidden_act = 'gelu' is not supported"),
])
def test_unsupported_configs_are_named(tmp_path, change, message):
  with pytest.raises(ValueError, match=message):
    _load_with(tmp_path, _prm_config(**change), _prm_tensors())


def test_missing_misshapen_and_foreign_tensors_are_named(tmp_path):
  tensors = _prm_tensors()
  for name in ("score.0.weight", "score.2.bias"):
    with pytest.raises(ValueError, match=rf"tensor '{name}' is missing \(the score head"):
      _load_with(tmp_path, _prm_config(), {k: v for k, v in tensors.items() if k != name})
  with pytest.raises(ValueError, match=r"tensor 'score.2.weight' has shape \[3, 32\], which does "
                                       r"not give our out/kernel of shape \[32, 2\]"):
    _load_with(tmp_path, _prm_config(), tensors | {"score.2.weight": np.zeros((3, D), np.float32)})
  with pytest.raises(ValueError, match=r"'score.0.bias' is stored as I32"):
    directory = tmp_path / "int"
    _write(directory, _prm_config(), tensors | {"score.0.bias": np.zeros(D, np.int32)}, dtype=None)
    released_prm.load_qwen_prm(directory)
  # Backbone errors come from safetensors_checkpoint and name the checkpoint directory.
  with pytest.raises(ValueError) as missing:
    _load_with(tmp_path, _prm_config(), {k: v for k, v in tensors.items()
                                         if k != "model.layers.1.mlp.up_proj.weight"})
  assert "tensor 'model.layers.1.mlp.up_proj.weight' is missing" in str(missing.value)
  assert str(missing.value).startswith(str(tmp_path))
  with pytest.raises(ValueError, match=r"unexpected tensor 'value_head.weight'"):
    _load_with(tmp_path, _prm_config(), tensors | {"value_head.weight": np.zeros(D, np.float32)})


def test_missing_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"config not found"):
    released_prm.load_qwen_prm(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps(_prm_config()))
  with pytest.raises(FileNotFoundError, match=r"neither model.safetensors.index.json nor"):
    released_prm.load_qwen_prm(tmp_path)


def test_bad_inputs_are_named(tmp_path):
  hf = _prm_config()
  cfg = released_prm.qwen_prm_config(hf)
  head = released_prm.qwen_prm_head_params(_prm_tensors(), D)
  backbone = {}  # never reached: the inputs are checked first
  probs = lambda *a, **kw: released_prm.qwen_step_probabilities(backbone, *a, **kw)
  with pytest.raises(ValueError, match=r"step_mask_BxT has shape \(2, 11\); it must equal "
                                       r"tokens_BxT's shape \(2, 12\)"):
    probs(head, cfg, TOKENS_BxT, MASK_BxT[:, 1:])
  with pytest.raises(ValueError, match=r"step_mask_BxT must be boolean, got dtype int"):
    probs(head, cfg, TOKENS_BxT, MASK_BxT.astype(np.int32))
  with pytest.raises(ValueError, match=r"tokens_BxT must be a 2-D integer array \[B, T\], got "
                                       r"shape \(12,\)"):
    probs(head, cfg, TOKENS_BxT[0], MASK_BxT[0])
  with pytest.raises(ValueError, match=r"tokens_BxT has 65 positions; model.max_len is 64"):
    probs(head, cfg, np.zeros((1, 65), np.int32), np.zeros((1, 65), bool))
  bad_head = {"dense": head["dense"], "out": {"kernel": np.zeros((D, 3)), "bias": np.zeros(2)}}
  with pytest.raises(ValueError, match=r"head_params\['out'\]\['kernel'\] has shape \(32, 3\); "
                                       r"expected \(32, 2\)"):
    probs(bad_head, cfg, TOKENS_BxT, MASK_BxT)
  with pytest.raises(ValueError, match=r"head_params\['out'\]\['bias'\] is missing"):
    probs({"dense": head["dense"], "out": {"kernel": head["out"]["kernel"]}}, cfg, TOKENS_BxT,
          MASK_BxT)
  shepherd = lambda mask=MASK_BxT, **ids: released_prm.shepherd_step_probabilities(
      {}, cfg, TOKENS_BxT, mask, **({"good_id": GOOD, "bad_id": BAD} | ids))
  with pytest.raises(ValueError, match=r"tag_mask_BxT has shape \(2, 11\)"):
    shepherd(MASK_BxT[:, 1:])
  with pytest.raises(ValueError, match=r"good_id must be a token id in \[0, model.vocab_size = "
                                       r"48\), got 48"):
    shepherd(good_id=V)
  with pytest.raises(ValueError, match=r"bad_id must be a token id .* got True"):
    shepherd(bad_id=True)
  with pytest.raises(ValueError, match=r"good_id and bad_id must differ, both are 13"):
    shepherd(bad_id=GOOD)
