"""Per-token loss of every routing *pattern* (one route per layer, same for all tokens).

Patterns are numbered as base-R numbers of their routes, first layer most significant, with
digits (SMALL=0, BIG=1) when R=2 and the route ids (SKIP=0, SMALL=1, BIG=2) when R=3.
Worked example, L=3, R=2 (s = SMALL, b = BIG):

  index  0    1    2    3    4    5    6    7
  route  sss  ssb  sbs  sbb  bss  bsb  bbs  bbb

Prefix sharing: the tree's node at depth l holds the hidden state after layers 0..l-1 under
one route prefix; expanding it runs layer l's attention once and one FFN per route option, so
children are stacked as [N, R] -> N*R, which keeps the numbering above. All R^L patterns cost
R + R^2 + ... + R^L = R(R^L - 1)/(R - 1) layer evaluations (attention shared by siblings),
not L * R^L. Depths 0..split_depth are expanded breadth-first; the R^split_depth subtrees
below are expanded in chunks under `lax.map`, with logits only at the leaves, so memory
holds about max(R^split_depth, chunk * R^(L - split_depth)) hidden states, not R^L.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from adaptive_jax import routing
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import DecoderLayer, Transformer, layer_params
from adaptive_jax.routing import Route, route_options
from adaptive_jax.train.step import cross_entropy
from adaptive_jax.typed_config import check_integer


def pattern_routes(num_layers: int, with_skip: bool = False) -> np.ndarray:
  """All patterns in tree order (see the module docstring), int32 routes_PxL, P = R^L."""
  options_R = np.array(route_options(with_skip), np.int32)
  digits_PxL = np.indices((len(options_R),) * num_layers).reshape(num_layers, -1).T
  return options_R[digits_PxL]


def shared_layer_evals(num_layers: int, num_routes: int) -> int:
  """Child states the prefix tree computes: R + R^2 + ... + R^L (one per tree edge)."""
  return sum(num_routes**d for d in range(1, num_layers + 1))


def naive_layer_evals(num_layers: int, num_routes: int) -> int:
  """Layer evaluations of one full forward per pattern: L * R^L."""
  return num_layers * num_routes**num_layers


def pattern_flops(flops: routing.FlopModel, num_layers: int, vocab_size: int, *,
                  with_skip: bool = False) -> tuple[float, float]:
  """Forward FLOPs per sequence token for all patterns, (prefix-shared, naive), logits included.

  Shared: each of the (R^L - 1)/(R - 1) internal nodes runs one attention and every FFN option.
  Naive: R^L full forwards. Both compute R^L leaves' logits (2 * D * V each).
  """
  options = route_options(with_skip)
  R, L = len(options), num_layers
  logits = R**L * 2.0 * flops.d_model * vocab_size
  inner_nodes = (R**L - 1) // (R - 1)
  shared = inner_nodes * (flops.attention() + sum(flops.ffn(r) for r in options)) + logits
  # Over all patterns each layer takes each option R^(L-1) times.
  naive = R**L * L * flops.attention() + L * R**(L - 1) * sum(flops.ffn(r) for r in options)
  return shared, naive + logits


def _check_inputs(cfg: ModelConfig, tokens_BxT, targets_BxT):
  if not cfg.duo:
    raise ValueError("the pattern oracle needs a Duo model (model.duo=True)")
  shape = getattr(tokens_BxT, "shape", None)
  if shape is None or len(shape) != 2:
    raise ValueError(f"tokens_BxT must have shape [batch, tokens], got shape {shape}")
  if getattr(targets_BxT, "shape", None) != shape:
    raise ValueError(f"targets_BxT must have the shape of tokens_BxT {shape}, "
                     f"got {getattr(targets_BxT, 'shape', None)}")
  if shape[1] > cfg.max_len:
    raise ValueError(f"tokens_BxT has {shape[1]} tokens, more than model.max_len={cfg.max_len}")


def _axes(mesh, batch: int):
  """Mesh axes for (node or pattern axis, batch axis) of [N, B, ...] stacks, and their size.

  The batch goes over 'data' when it divides; the nodes over the remaining axes (those
  subtrees are independent, so sharding them needs no communication).
  """
  if mesh is None:
    return None, None, 1
  if batch % mesh.shape["data"] == 0:
    return "model", "data", mesh.shape["model"]
  return ("data", "model"), None, mesh.size


def _constrain(x_NxB, mesh, node_axes, batch_axis, node_devices):
  if mesh is None:
    return x_NxB
  node = node_axes if x_NxB.shape[0] % node_devices == 0 else None  # too few nodes: replicate
  return jax.lax.with_sharding_constraint(x_NxB, NamedSharding(mesh, P(node, batch_axis)))


def _expand(params, cfg, l, x_NxBxTxD, options, leaf_fn=None):
  """Layer l on every node: attention once per node, then one child per route: [N*R, B, T, D].

  Nodes are vmapped, not folded into the batch, so a node axis and a batch axis sharded over
  different mesh axes stay apart (folding them makes XLA all-gather the states). The route is
  the same for every node, so DuoFFN's lax.cond stays a cond under vmap and computes only that
  route's FFN. With `leaf_fn`, each child is mapped through it before stacking (logits -> loss
  at the last layer, so only N leaves' logits are alive at a time).
  """
  B, T = x_NxBxTxD.shape[1:3]
  layer, lp = DecoderLayer(cfg), {"params": layer_params(params, l)}
  positions_BxT = jnp.broadcast_to(jnp.arange(T), (B, T))
  attention = lambda x: layer.apply(lp, x, positions_BxT, method=DecoderLayer.attention_block)
  h_NxBxTxD = jax.vmap(attention)(x_NxBxTxD)
  children = []
  for route in options:
    if route == Route.SKIP:
      child = h_NxBxTxD  # residual only: what ffn_block gives for SKIP (h + 0)
    else:
      route_in = {"route": jnp.full((B, T), int(route), jnp.int32)}
      ffn = lambda h: layer.apply(lp, h, route_in, method=DecoderLayer.ffn_block)
      child = jax.vmap(ffn)(h_NxBxTxD)
    children.append(child if leaf_fn is None else leaf_fn(child))
  stacked = jnp.stack(children, axis=1)  # [N, R, ...]: child index = parent * R + route digit
  return stacked.reshape(-1, *stacked.shape[2:])


def _call(fn_and_shardings, mesh, params, *arrays):
  """Runs a jitted fn on the mesh, first placing its inputs as its in_shardings say (jit
  rejects committed arrays, e.g. restored params, placed otherwise)."""
  fn, in_shardings = fn_and_shardings
  if mesh is None:
    return fn(params, *arrays)
  with jax.set_mesh(mesh):
    return fn(*jax.device_put((params, *arrays), in_shardings))


@functools.lru_cache(maxsize=32)
def _tree_fn(cfg: ModelConfig, options, split_depth: int, chunk: int, mesh, batch: int):
  L, R = cfg.num_layers, len(options)
  node_axes, batch_axis, node_devices = _axes(mesh, batch)
  constrain = lambda x: _constrain(x, mesh, node_axes, batch_axis, node_devices)
  model = Transformer(cfg)

  def run(params, tokens_BxT, targets_BxT):
    leaf_loss = jax.vmap(lambda x_BxTxD: cross_entropy(
        model.apply({"params": params}, x_BxTxD, method=Transformer.logits), targets_BxT))
    x = model.apply({"params": params}, tokens_BxT, method=Transformer.embed_tokens)[None]
    for l in range(split_depth):  # breadth-first to R^split_depth subtree roots
      x = constrain(_expand(params, cfg, l, x, options))
    roots = x.shape[0]
    steps = -(-roots // chunk)
    # Zero states pad the roots to whole chunks; their leaves are cut off below.
    x = jnp.concatenate([x, jnp.zeros((steps * chunk - roots, *x.shape[1:]), x.dtype)])
    # Chunk j, map step c holds root j * steps + c: each device keeps its block of roots.
    xs = jnp.moveaxis(x.reshape(chunk, steps, *x.shape[1:]), 1, 0)

    def subtree(x_CxBxTxD):
      x = constrain(x_CxBxTxD)
      if split_depth == L:
        return leaf_loss(x)
      for l in range(split_depth, L):
        x = constrain(_expand(params, cfg, l, x, options, leaf_loss if l == L - 1 else None))
      return x  # [C * R^(L - split_depth), B, T] losses

    loss = jax.lax.map(subtree, xs)  # [steps, C * leaves, B, T]
    loss = jnp.moveaxis(loss.reshape(steps, chunk, -1, *loss.shape[2:]), 1, 0)
    return loss.reshape(-1, *loss.shape[3:])[:R**L]

  if mesh is None:
    return jax.jit(run), None
  data = NamedSharding(mesh, P(batch_axis))
  in_shardings = (NamedSharding(mesh, P()), data, data)
  out_node = node_axes if R**L % node_devices == 0 else None
  return jax.jit(run, in_shardings=in_shardings,
                 out_shardings=NamedSharding(mesh, P(out_node, batch_axis))), in_shardings


def pattern_loss_matrix(params, cfg: ModelConfig, tokens_BxT, targets_BxT, *,
                        with_skip: bool = False, split_depth: int | None = None,
                        mesh: jax.sharding.Mesh | None = None,
                        chunk: int | None = None) -> jax.Array:
  """Per-token cross-entropy of every pattern, float32 loss_PxBxT in `pattern_routes` order.

  One jitted call with prefix sharing (module docstring). `split_depth` (default ceil(L/2))
  trades the breadth-first states R^split_depth against the subtree leaves; `chunk` subtrees
  (default: one per device holding nodes) are expanded per `lax.map` step. With a (data, model)
  `mesh` the batch is split over 'data' when it divides and tree nodes over the other devices.
  """
  _check_inputs(cfg, tokens_BxT, targets_BxT)
  L = cfg.num_layers
  split_depth = (L + 1) // 2 if split_depth is None else split_depth
  split_depth = check_integer("split_depth", split_depth, minimum=0, maximum=L)
  node_devices = _axes(mesh, tokens_BxT.shape[0])[2]
  chunk = check_integer("chunk", node_devices if chunk is None else chunk)
  fn = _tree_fn(cfg, route_options(with_skip), split_depth, chunk, mesh, tokens_BxT.shape[0])
  return _call(fn, mesh, params, tokens_BxT, targets_BxT)


@functools.lru_cache(maxsize=32)
def _subset_fn(cfg: ModelConfig, chunk: int, mesh, batch: int):
  node_axes, batch_axis, node_devices = _axes(mesh, batch)
  constrain = lambda x: _constrain(x, mesh, node_axes, batch_axis, node_devices)
  model = Transformer(cfg)

  def run(params, tokens_BxT, targets_BxT, routes_SxCxL):
    B, T = tokens_BxT.shape

    def forward(routes_CxL):
      # Pattern c's route is the same for its B x T tokens; its rows are c * B + b.
      route_CxBxTxL = constrain(
          jnp.broadcast_to(routes_CxL[:, None, None], (chunk, B, T, cfg.num_layers)))
      tokens_CxBxT = constrain(jnp.broadcast_to(tokens_BxT, (chunk, B, T)))
      logits = model.apply({"params": params}, tokens_CxBxT.reshape(chunk * B, T),
                           route_BxTxL=route_CxBxTxL.reshape(chunk * B, T, -1))
      loss = cross_entropy(logits, jnp.tile(targets_BxT, (chunk, 1)))
      return constrain(loss.reshape(chunk, B, T))

    return jax.lax.map(forward, routes_SxCxL)

  if mesh is None:
    return jax.jit(run), None
  data, replicated = NamedSharding(mesh, P(batch_axis)), NamedSharding(mesh, P())
  in_shardings = (replicated, data, data, replicated)
  node = node_axes if chunk % node_devices == 0 else None
  return jax.jit(run, in_shardings=in_shardings,
                 out_shardings=NamedSharding(mesh, P(None, node, batch_axis))), in_shardings


def subset_loss_matrix(params, cfg: ModelConfig, tokens_BxT, targets_BxT, routes_PxL, *,
                       chunk: int | None = None,
                       mesh: jax.sharding.Mesh | None = None) -> jax.Array:
  """Per-token loss of the given patterns only (a subsample of 3^L), float32 loss_PxBxT.

  Full forwards, `chunk` patterns (default 16, rounded up to the node devices) folded into the
  batch per `lax.map` step, one jitted call. Patterns of a chunk that differ at a layer make
  DuoFFN compute both FFNs there (masked dense), so this costs up to 2x the FFN work of P
  separate forwards; no prefix sharing.
  """
  _check_inputs(cfg, tokens_BxT, targets_BxT)
  routes_PxL = np.asarray(routes_PxL)
  if routes_PxL.ndim != 2 or routes_PxL.shape[1] != cfg.num_layers or not len(routes_PxL):
    raise ValueError(f"routes_PxL must have shape [patterns >= 1, num_layers={cfg.num_layers}], "
                     f"got shape {routes_PxL.shape}")
  routing.validate_routes(routes_PxL[:, None], num_layers=cfg.num_layers, name="routes_PxL")
  node_devices = _axes(mesh, tokens_BxT.shape[0])[2]
  if chunk is None:
    chunk = -(-16 // node_devices) * node_devices
  chunk = check_integer("chunk", chunk)
  num = len(routes_PxL)
  chunk = min(chunk, -(-num // node_devices) * node_devices)  # no chunk larger than needed
  steps = -(-num // chunk)
  # Pad with copies of the last pattern (valid routes, no extra FFN in its chunk); cut below.
  padded = np.concatenate([routes_PxL, np.repeat(routes_PxL[-1:], steps * chunk - num, 0)])
  fn = _subset_fn(cfg, chunk, mesh, tokens_BxT.shape[0])
  routes_SxCxL = padded.reshape(steps, chunk, -1).astype(np.int32)
  loss = _call(fn, mesh, params, tokens_BxT, targets_BxT, routes_SxCxL)
  return loss.reshape(steps * chunk, *loss.shape[2:])[:num]
