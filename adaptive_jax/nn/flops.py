"""Forward FLOPs per token of a dense transformer (a multiply-add counts 2), for compute budgets.

Per layer: the q and output projections (2 * 2 * D * N * H, N heads of width H), the k and v
projections (2 * 2 * D * K * H, K key/value heads), the SwiGLU FFN (3 * 2 * D * F), and
attention scores and values over `context` keys (2 * 2 * context * N * H); then the output
logits (2 * D * V). Norms, rotary positions and
softmax are left out (under 1% here).
"""

from adaptive_jax.nn.config import ModelConfig


def forward_flops_per_token(cfg: ModelConfig, context: float) -> float:
  """FLOPs to run one token through a dense model (`cfg.duo` False) attending to `context` keys."""
  if cfg.duo:
    raise ValueError("model.duo must be False: Duo models count FLOPs by route "
                     "(routing.FlopModel)")
  if context < 0:
    raise ValueError(f"context must be >= 0, got {context}")
  inner = cfg.num_heads * cfg.head_dim
  kv_inner = cfg.kv_heads * cfg.head_dim
  per_layer = (4.0 * cfg.d_model * (inner + kv_inner) + 6.0 * cfg.d_model * cfg.d_ff_big
               + 4.0 * context * inner)
  return cfg.num_layers * per_layer + 2.0 * cfg.d_model * cfg.vocab_size
