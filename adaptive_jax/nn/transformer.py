"""Llama-style decoder whose FFN layers are Duo-FFNs (or plain SwiGLU for a dense baseline).

Layers are stacked with `nn.scan` (params carry a leading 'layers' axis), so compile time does
not grow with depth; routes enter per layer as the scanned input. The pieces (`embed_tokens`,
`DecoderLayer.attention_block` / `ffn_block`, `logits`) can be applied on their own, with one
layer's slice of the params, by code that walks the layers itself (the oracles).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from adaptive_jax import routing
from adaptive_jax.nn.attention import Attention
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.duo_ffn import DuoFFN
from adaptive_jax.nn.ffn import SwiGLU


def rms_norm(cfg: ModelConfig, name: str | None = None) -> nn.RMSNorm:
  return nn.RMSNorm(epsilon=cfg.norm_eps, dtype=cfg.activation_dtype, param_dtype=cfg.weight_dtype,
                    scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                    name=name)


class DecoderLayer(nn.Module):
  """x + attention(norm(x)), then + ffn(norm(x)) with the FFN chosen by the layer's route."""
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.attention_norm = rms_norm(cfg)
    self.attention = Attention(cfg)
    self.ffn_norm = rms_norm(cfg)
    if cfg.duo:
      self.duo_ffn = DuoFFN(cfg)
    else:
      self.ffn = SwiGLU(cfg, cfg.d_ff_big)

  def attention_block(self, x_BxTxD, positions_BxT, segment_ids_BxT=None):
    return x_BxTxD + self.attention(self.attention_norm(x_BxTxD), positions_BxT,
                                    segment_ids_BxT)

  def ffn_block(self, x_BxTxD, route_in):
    """route_in: {'route': route_BxT} or {'weights': weights_BxTxR} (Duo), {} (dense)."""
    h_BxTxD = self.ffn_norm(x_BxTxD)
    if self.cfg.duo:
      ffn_BxTxD = self.duo_ffn(h_BxTxD, route_BxT=route_in.get("route"),
                               weights_BxTxR=route_in.get("weights"))
    else:
      ffn_BxTxD = self.ffn(h_BxTxD)
    return nn.with_logical_constraint(x_BxTxD + ffn_BxTxD, ("batch", "length", "embed"))

  def __call__(self, x_BxTxD, route_in, positions_BxT, segment_ids_BxT=None):
    x_BxTxD = self.attention_block(x_BxTxD, positions_BxT, segment_ids_BxT)
    return self.ffn_block(x_BxTxD, route_in), None


class Transformer(nn.Module):
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embed = nn.Embed(
        cfg.vocab_size, cfg.d_model, dtype=cfg.activation_dtype, param_dtype=cfg.weight_dtype,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=1, out_axis=0),
            ("vocab", "embed")))
    layer = nn.remat(DecoderLayer, prevent_cse=False) if cfg.remat else DecoderLayer
    self.layers = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True},
                          in_axes=(0, nn.broadcast, nn.broadcast), length=cfg.num_layers,
                          metadata_params={nn.PARTITION_NAME: "layers"})(cfg)
    self.final_norm = rms_norm(cfg)
    if not cfg.tie_embeddings:
      self.unembed = self.param(
          "unembed", nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                  ("embed", "vocab")),
          (cfg.d_model, cfg.vocab_size), cfg.weight_dtype)

  def embed_tokens(self, tokens_BxT):
    # Embeddings start at std 1/sqrt(D); scaling by sqrt(D) gives unit-size inputs while tied
    # logits stay O(1) at initialization. Llama checkpoints were trained without the scale.
    x_BxTxD = self.embed(tokens_BxT)
    if self.cfg.scale_embeddings:
      x_BxTxD = x_BxTxD * jnp.sqrt(self.cfg.d_model).astype(self.cfg.activation_dtype)
    return nn.with_logical_constraint(x_BxTxD, ("batch", "length", "embed"))

  def logits(self, x_BxTxD):
    """Final norm and (tied) output projection; float32 logits_BxTxV."""
    x_BxTxD = self.final_norm(x_BxTxD)
    if self.cfg.tie_embeddings:
      logits_BxTxV = self.embed.attend(x_BxTxD)
    else:
      logits_BxTxV = jnp.einsum("btd,dv->btv", x_BxTxD,
                                self.unembed.astype(self.cfg.activation_dtype))
    logits_BxTxV = nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "vocab"))
    return logits_BxTxV.astype(jnp.float32)

  def __call__(self, tokens_BxT, route_BxTxL=None, weights_BxTxLxR=None, positions_BxT=None,
               segment_ids_BxT=None):
    """Returns float32 logits_BxTxV.

    A Duo model takes exactly one of `route_BxTxL` (int ids SKIP/SMALL/BIG) or
    `weights_BxTxLxR` (soft mixture over the three routes); a dense model takes neither.
    Packed rows pass `segment_ids_BxT` (attention stays inside a segment) and
    `positions_BxT` (restarting at 0 in each segment).
    """
    route_in = self._route_inputs(route_BxTxL, weights_BxTxLxR)
    if positions_BxT is None:
      positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    x_BxTxD, _ = self.layers(self.embed_tokens(tokens_BxT), route_in, positions_BxT,
                             segment_ids_BxT)
    return self.logits(x_BxTxD)

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


def layer_params(params, layer: int):
  """The params of one decoder layer, sliced out of the scanned stack."""
  return jax.tree.map(lambda p: p[layer], params["layers"])
