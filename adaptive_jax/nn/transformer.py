"""Llama-style decoder whose FFN layers are Duo-FFNs (or plain SwiGLU for a dense baseline).

Layers are stacked with `nn.scan` (params carry a leading 'layers' axis), so compile time does
not grow with depth; routes enter per layer as the scanned input.
"""

import flax.linen as nn
import jax.numpy as jnp

from adaptive_jax import routing
from adaptive_jax.nn.attention import Attention
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.duo_ffn import DuoFFN
from adaptive_jax.nn.ffn import SwiGLU


def _rms_norm(cfg: ModelConfig, name: str):
  return nn.RMSNorm(epsilon=cfg.norm_eps, dtype=cfg.activation_dtype, param_dtype=cfg.weight_dtype,
                    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                    name=name)


class DecoderLayer(nn.Module):
  """x + attention(norm(x)), then + ffn(norm(x)) with the FFN chosen by the layer's route."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, route_in, positions_BxT):
    cfg = self.cfg
    x_BxTxD = x_BxTxD + Attention(cfg, name="attention")(
        _rms_norm(cfg, "attention_norm")(x_BxTxD), positions_BxT)
    h_BxTxD = _rms_norm(cfg, "ffn_norm")(x_BxTxD)
    if cfg.duo:
      ffn_BxTxD = DuoFFN(cfg, name="duo_ffn")(
          h_BxTxD, route_BxT=route_in.get("route"), weights_BxTxR=route_in.get("weights"))
    else:
      ffn_BxTxD = SwiGLU(cfg, cfg.d_ff_big, name="ffn")(h_BxTxD)
    x_BxTxD = nn.with_logical_constraint(x_BxTxD + ffn_BxTxD, ("batch", "length", "embed"))
    return x_BxTxD, None


class Transformer(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxT, route_BxTxL=None, weights_BxTxLxR=None, positions_BxT=None):
    """Returns float32 logits_BxTxV.

    A Duo model takes exactly one of `route_BxTxL` (int ids SKIP/SMALL/BIG) or
    `weights_BxTxLxR` (soft mixture over the three routes); a dense model takes neither.
    """
    cfg = self.cfg
    route_in = self._route_inputs(route_BxTxL, weights_BxTxLxR)
    if positions_BxT is None:
      positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    embed = nn.Embed(
        cfg.vocab_size, cfg.d_model, dtype=cfg.activation_dtype, param_dtype=cfg.weight_dtype,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=1, out_axis=0),
            ("vocab", "embed")), name="embed")
    # Embeddings start at std 1/sqrt(D); scaling by sqrt(D) gives unit-size inputs while tied
    # logits stay O(1) at initialization.
    x_BxTxD = embed(tokens_BxT) * jnp.sqrt(cfg.d_model).astype(cfg.activation_dtype)
    x_BxTxD = nn.with_logical_constraint(x_BxTxD, ("batch", "length", "embed"))
    layer = nn.remat(DecoderLayer, prevent_cse=False) if cfg.remat else DecoderLayer
    layers = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=(0, nn.broadcast), length=cfg.num_layers,
                     metadata_params={nn.PARTITION_NAME: "layers"})
    x_BxTxD, _ = layers(cfg, name="layers")(x_BxTxD, route_in, positions_BxT)
    x_BxTxD = _rms_norm(cfg, "final_norm")(x_BxTxD)
    if cfg.tie_embeddings:
      logits_BxTxV = embed.attend(x_BxTxD)
    else:
      logits_BxTxV = nn.DenseGeneral(
          cfg.vocab_size, use_bias=False, dtype=cfg.activation_dtype, param_dtype=cfg.weight_dtype,
          kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                   ("embed", "vocab")), name="unembed")(x_BxTxD)
    logits_BxTxV = nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "vocab"))
    return logits_BxTxV.astype(jnp.float32)

  def _route_inputs(self, route_BxTxL, weights_BxTxLxR):
    """Per-layer scanned route inputs, layer axis first: {'route': LxBxT} or {'weights': LxBxTxR}."""
    cfg = self.cfg
    if not cfg.duo:
      if route_BxTxL is not None or weights_BxTxLxR is not None:
        raise ValueError("a dense model (model.duo=False) takes no routes")
      return {}
    if (route_BxTxL is None) == (weights_BxTxLxR is None):
      raise ValueError("a Duo model needs exactly one of route_BxTxL or weights_BxTxLxR")
    if route_BxTxL is not None:
      routing.validate_routes(route_BxTxL, num_layers=cfg.num_layers)
      return {"route": jnp.moveaxis(route_BxTxL, -1, 0)}
    routing.validate_soft_routes(weights_BxTxLxR, num_layers=cfg.num_layers)
    return {"weights": jnp.moveaxis(weights_BxTxLxR, 2, 0)}
