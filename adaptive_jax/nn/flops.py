"""Forward FLOPs per token of a dense transformer (a multiply-add counts 2), for compute budgets.

Per layer, counted by `routing.FlopModel` (the one FLOP model, Duo routes included): the q and
output projections (2 * 2 * D * N * H, N heads of width H), the k and v projections
(2 * 2 * D * K * H, K key/value heads), the SwiGLU FFN (3 * 2 * D * F), and attention scores
and values over `context` keys (2 * 2 * context * N * H); then the output logits (2 * D * V).
Norms, rotary positions and softmax are left out (under 1% here).
"""

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.routing import FlopModel, Route


def forward_flops_per_token(cfg: ModelConfig, context: float) -> float:
  """FLOPs to run one token through a dense model (`cfg.duo` False) attending to `context` keys."""
  if cfg.duo:
    raise ValueError("model.duo must be False: Duo models count FLOPs by route "
                     "(routing.FlopModel)")
  if context < 0:
    raise ValueError(f"context must be >= 0, got {context}")
  layer = FlopModel.from_config(cfg, context)
  return (cfg.num_layers * (layer.attention() + layer.ffn(Route.BIG))
          + 2.0 * cfg.d_model * cfg.vocab_size)


def decode_flops_per_token(cfg: ModelConfig, prompt_len: int, steps: int) -> float:
  """Mean FLOPs of a decode token over steps t = 1..S after a P-token prompt (P + t keys)."""
  return forward_flops_per_token(cfg, prompt_len + (steps + 1) / 2)


def prefill_flops_per_token(cfg: ModelConfig, prompt_len: int) -> float:
  """Mean FLOPs of a prompt token: token i sees i + 1 keys; logits at the last position only."""
  logits = 2.0 * cfg.d_model * cfg.vocab_size
  return (forward_flops_per_token(cfg, (prompt_len + 1) / 2)
          - logits * (prompt_len - 1) / prompt_len)
