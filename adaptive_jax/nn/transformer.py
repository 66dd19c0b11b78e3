"""Llama-style decoder whose FFN layers are Duo-FFNs (or plain SwiGLU for a dense baseline).

One call serves every path: `Transformer.__call__(tokens, routes, positions, segment ids,
cache)` runs the scanned layer stack (params carry a leading 'layers' axis, so compile time
does not grow with depth; routes enter per layer as the scanned input) and returns logits,
the last position's logits or the final-normed hidden states, and with a `KVCache` the
updated cache:

  training, evaluation   model.apply(p, tokens, route_BxTxL=...)            -> logits_BxTxV
  packed rows            ... segment_ids_BxT=..., positions_BxT=...
  PRM readout            ... output="hidden"                                 -> h_BxTxD
  prefill, decode        ... cache=KVCache, cache_access=..., output="last_logits"
                                                                             -> (logits_BxV, cache)

Paths that must branch per layer (the pattern-tree and sequential oracles, the routers, which
choose layer l's route from its FFN input) call one layer's `DecoderLayer.attention_block`
(or `attention_over` a cache), `ffn_input` and `ffn_block` with that layer's slice of the
params (`layer_params`), between `embed_tokens` and `logits`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax import routing
from adaptive_jax.nn import dispatch
from adaptive_jax.nn.attention import Attention, cached_attention
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.duo_ffn import DuoFFN
from adaptive_jax.nn.ffn import SwiGLU
from adaptive_jax.nn.kv_cache import CacheAccess, KVCache, causal_access
from adaptive_jax.nn.quantize import (
    Int8Embed,
    as_matrix,
    dequantize,
    kernel,
    project,
    project_rows,
    shape_of,
)

OUTPUTS = ("logits", "last_logits", "hidden")


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

  def attention_over(self, x_BxTxD, positions_BxT, k_cache_BxKxSxH, v_cache_BxKxSxH,
                     mask_BxTxS):
    """x + attention of T tokens over given keys and values, each token also seeing its own
    key and value beside them (tree nodes that are not in the cache, the sequential oracle's);
    also returns the tokens' keys and values."""
    q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = self.attention.qkv(self.attention_norm(x_BxTxD),
                                                         positions_BxT)
    o_BxTxNxH = cached_attention(q_BxTxNxH, k_cache_BxKxSxH, v_cache_BxKxSxH, mask_BxTxS,
                                 k_BxTxKxH, v_BxTxKxH)
    return x_BxTxD + self.attention.project_out(o_BxTxNxH), k_BxTxKxH, v_BxTxKxH

  def ffn_input(self, x_BxTxD):
    """The normed state the FFN reads (and a router reads to choose it)."""
    return self.ffn_norm(x_BxTxD)

  def ffn_block(self, x_BxTxD, route_in):
    """route_in: {'route': route_BxT} or {'weights': weights_BxTxR} (Duo), {} (dense)."""
    h_BxTxD = self.ffn_input(x_BxTxD)
    if self.cfg.duo:
      ffn_BxTxD = self.duo_ffn(h_BxTxD, route_BxT=route_in.get("route"),
                               weights_BxTxR=route_in.get("weights"))
    else:
      ffn_BxTxD = self.ffn(h_BxTxD)
    return nn.with_logical_constraint(x_BxTxD + ffn_BxTxD, ("batch", "length", "embed"))

  def __call__(self, x_BxTxD, route_in, positions_BxT, segment_ids_BxT=None):
    """One layer of the scanned stack (carry x_BxTxD, scanned route_in)."""
    x_BxTxD = self.attention_block(x_BxTxD, positions_BxT, segment_ids_BxT)
    return self.ffn_block(x_BxTxD, route_in), None

  def cached(self, x_BxTxD, route_in, positions_BxT, cache: KVCache, layer: int,
             access: CacheAccess):
    """The layer over a KV cache it writes to: (x_BxTxD, cache)."""
    out_BxTxD, cache = self.attention.cached(self.attention_norm(x_BxTxD), positions_BxT, cache,
                                             layer, access)
    return self.ffn_block(x_BxTxD + out_BxTxD, route_in), cache


class Transformer(nn.Module):
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    if cfg.weight_quant == "int8":
      self.embed = Int8Embed(cfg.vocab_size, cfg.d_model, cfg.activation_dtype)
    else:
      self.embed = nn.Embed(
          cfg.vocab_size, cfg.d_model, dtype=cfg.activation_dtype, param_dtype=cfg.weight_dtype,
          embedding_init=nn.with_logical_partitioning(
              nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=1, out_axis=0),
              ("vocab", "embed")))
    layer = nn.remat(DecoderLayer, prevent_cse=False) if cfg.remat else DecoderLayer
    self.layers = nn.scan(layer, variable_axes={"params": 0, "intermediates": 0},
                          split_rngs={"params": True},
                          in_axes=(0, nn.broadcast, nn.broadcast), length=cfg.num_layers,
                          metadata_params={nn.PARTITION_NAME: "layers"})(cfg)
    self.final_norm = rms_norm(cfg)
    if not cfg.tie_embeddings:
      self.unembed = kernel(self, "unembed", nn.initializers.lecun_normal(), ("embed", "vocab"),
                            (cfg.d_model, cfg.vocab_size), cfg)

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
      # The table as it is stored ([V, D], contracted on D): flax's `attend` multiplies by
      # its transpose, which XLA on CPU materialized in every decode step.
      embedding_VxD = self.embed.embedding
      if self.cfg.int8_matvec == "cpu":
        logits_BxTxV = project_rows(x_BxTxD, embedding_VxD, self.embed.embedding_scale,
                                    self.cfg.activation_dtype)
      else:
        if self.cfg.weight_quant == "int8":
          embedding_VxD = dequantize(embedding_VxD, self.embed.embedding_scale,
                                     self.cfg.activation_dtype)
        logits_BxTxV = jnp.einsum("btd,vd->btv", x_BxTxD,
                                  embedding_VxD.astype(self.cfg.activation_dtype))
    else:
      logits_BxTxV = project(x_BxTxD, as_matrix(self.unembed, *shape_of(self.unembed)),
                             self.cfg.activation_dtype)
    logits_BxTxV = nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "vocab"))
    return logits_BxTxV.astype(jnp.float32)

  def __call__(self, tokens_BxT, route_BxTxL=None, weights_BxTxLxR=None, positions_BxT=None,
               segment_ids_BxT=None, cache: KVCache | None = None,
               cache_access: CacheAccess | None = None, output: str = "logits"):
    """The model on tokens_BxT: `output` "logits" (float32 logits_BxTxV), "last_logits"
    (float32 logits_BxV of the last position) or "hidden" (final-normed h_BxTxD); with a
    `cache`, the pair (that, updated cache).

    A Duo model takes exactly one of `route_BxTxL` (int ids SKIP/SMALL/BIG) or
    `weights_BxTxLxR` (soft mixture over the three routes); a dense model takes neither.
    Packed rows pass `segment_ids_BxT` (attention stays inside a segment) and
    `positions_BxT` (restarting at 0 in each segment). With a cache, the tokens go to slots
    `cache_access.slot` .. and attend to the slots its mask allows (default: the tokens
    follow slots 0 .. slot - 1 of every row, `kv_cache.causal_access` at slot 0).
    """
    if output not in OUTPUTS:
      raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if cache is None and cache_access is not None:
      raise ValueError("cache_access needs a cache")
    if cache is not None and segment_ids_BxT is not None:
      raise ValueError("segment_ids_BxT (packed rows) cannot be used with a cache")
    if cache is None and isinstance(self.variables.get("params", {}).get("layers"), tuple):
      raise ValueError("params with unstacked layers (unstack_layers) serve calls with a "
                       "cache; the full forward needs the scanned stack")
    route_in = self._route_inputs(route_BxTxL, weights_BxTxLxR)
    batch, num_tokens = tokens_BxT.shape
    if cache is not None and cache_access is None:
      cache_access = causal_access(0, batch, num_tokens, cache.num_slots)
    if cache is not None and not isinstance(cache_access.slot, jax.core.Tracer):
      # dynamic_update_slice would clamp the start and overwrite earlier slots.
      last = int(np.max(np.asarray(cache_access.slot))) + num_tokens
      if last > cache.num_slots:
        raise ValueError(f"cache_access.slot + {num_tokens} tokens = {last} exceeds the "
                         f"cache's {cache.num_slots} slots")
    if positions_BxT is None:  # with a cache: the slots the tokens go to
      first = 0 if cache_access is None else cache_access.slot
      positions_BxT = jnp.broadcast_to(jnp.asarray(first)[..., None] + jnp.arange(num_tokens),
                                       tokens_BxT.shape)
    x_BxTxD = self.embed_tokens(tokens_BxT)
    if cache is None:
      x_BxTxD, _ = self.layers(x_BxTxD, route_in, positions_BxT, segment_ids_BxT)
    else:
      x_BxTxD, cache = self._cached_layers(x_BxTxD, route_in, positions_BxT, cache, cache_access)
    if output == "hidden":
      out = self.final_norm(x_BxTxD)
    elif output == "last_logits":
      out = self.logits(x_BxTxD[:, -1:])[:, 0]
    else:
      out = self.logits(x_BxTxD)
    return out if cache is None else (out, cache)

  def _cached_layers(self, x_BxTxD, route_in, positions_BxT, cache: KVCache,
                     access: CacheAccess):
    """The same layers walked one by one, each over its own cache array (kv_cache.py says why
    not the scan); each layer's params are its slice of the scanned stack."""
    if self.is_initializing():
      raise ValueError("initialize the model without a cache")
    layer = DecoderLayer(self.cfg, parent=None)  # applied functionally, not a submodule
    params = nn.meta.unbox(self.variables["params"])
    # Sparse dispatch's overflow reaches the caller only if the caller collects it; otherwise
    # the layer runs without the collection too, so a buffer that can drop tokens raises.
    collect = self.is_mutable_collection("intermediates")
    for l in range(self.cfg.num_layers):
      out = layer.apply({"params": layer_params(params, l)}, x_BxTxD,
                        jax.tree.map(lambda r: r[l], route_in), positions_BxT, cache, l, access,
                        method=DecoderLayer.cached,
                        mutable=["intermediates"] if collect else False)
      (x_BxTxD, cache), sown = out if collect else (out, {})
      if sown:
        self.sow("intermediates", dispatch.OVERFLOW, dispatch.overflow(sown))
    return x_BxTxD, cache

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
  """The params of one decoder layer: sliced out of the scanned stack, or the layer's own tree
  where `unstack_layers` split the stack."""
  if isinstance(params["layers"], tuple):
    return params["layers"][layer]
  return jax.tree.map(lambda p: p[layer], params["layers"])


def unstack_layers(params):
  """`params` with the scanned layer stack split into a tuple of per-layer trees, for the
  cached calls (prefill, decode), which walk the layers one by one.

  Inside a compiled function, a layer's slice of the stack is a copy: a decode step that
  slices every layer reads every weight twice and writes it once (on 2 CPU cores, SmolLM2's
  batch-1 decode ran at half the speed). Split once, outside the loop that reads the layers
  (`decode.sample` does, in its jitted body before the decode loop: one copy per call); the
  full forward (`cache=None`) needs the stack.
  """
  if isinstance(params["layers"], tuple):
    return params
  params = nn.meta.unbox(params)
  layers = params["layers"]
  num_layers = jax.tree.leaves(layers)[0].shape[0]
  return {**params, "layers": tuple(jax.tree.map(lambda p: p[l], layers)
                                    for l in range(num_layers))}
