"""Context-consistent oracle: left to right, each token searches its own path under a budget.

The paper's oracle takes per token the best of 2^L patterns, each applied to the whole
sequence, so a token's context was computed under the token's own pattern: not realizable.
Here tokens go left to right with a KV cache: earlier tokens keep their chosen paths (their
keys/values at every layer are fixed), and token t picks, among its paths with exactly k BIG
layers, the one with the lowest loss on targets[t]; its keys/values are then appended. The
context is consistent with the earlier choices, but the choice still reads the token's own
target, which no router sees: an oracle, not a realizable router.

Token t's search is a prefix-shared tree over layers. A node at depth l holds t's hidden state
after l layers along a route prefix; expanding it runs layer l's attention once (its query
against the cache of tokens < t plus its own key/value), then the FFNs of its SMALL and BIG
children. Prefixes that cannot end with exactly k BIG layers are pruned. Worked example, L=2, k=1:

  depth 0: [()]                  attention of layer 0 once
  depth 1: [(S,) | (B,)]         children as [small group | big group]: one FFN each
  depth 2: [(B,S) | (S,B)]       attention of layer 1 for both parents; (S,S), (B,B) pruned

`naive_sequential_oracle` runs the same program with no sharing (one node per path at every
depth): the benchmark's reference. `evaluation_counts` gives both costs; at L=12, k=6 the tree
does 2507 attention + 3430 FFN evaluations per token against 11088 + 11088 for the 924 paths
one by one (924 logits each); over all 2^L paths it is 4095 + 8190 against L * 2^L = 49152 each.

All budgets run side by side as batch entries (M = K * B, budget-major). Each depth's node list
is padded to the largest over the budgets (never beyond the full tree); padded nodes are
invalid and never chosen. Memory per token step: leaf logits M x C x V floats (C = the most
leaves of a budget, C(L, k) <= 924 for L=12) plus node activations M x P x (F_big + N*T), and
the caches 2 x L x M x K x T x H (K key/value heads). duo_small (V=2048), B=2, budgets (4, 6, 8): 45 MB of logits,
5 MB of cache. Attention reads the whole T-slot cache (masked), so each step costs O(T).

Letters here: K budgets (in route_KxBxTxL), M = K * B rows, P tree nodes of a depth, C leaves,
N query heads (K in cache shapes: key/value heads, as nn/attention.py).
"""

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import DecoderLayer, Transformer, layer_params
from adaptive_jax.routing import Route, validate_budget
from adaptive_jax.train.step import cross_entropy


def _nodes(num_layers: int, budget: int | None, share: bool):
  """Per layer l: (small children's parents, big children's parents) as positions at depth l.

  Paths are tuples of bits (1 = BIG). A node at depth l is a prefix path[:l] (shared) or the
  whole path (naive); depth l+1 lists the children taking SMALL at layer l, then those taking BIG.
  Returns (number of depth-0 nodes, [(small_parents, big_parents)] per layer).
  """
  paths = [p for p in itertools.product((0, 1), repeat=num_layers)
           if budget is None or sum(p) == budget]
  key = (lambda l, p: p[:l]) if share else (lambda l, p: p)
  depth = sorted({key(0, p) for p in paths})
  num_start, layers = len(depth), []
  for l in range(num_layers):
    index = {node: i for i, node in enumerate(depth)}
    groups = [sorted({key(l + 1, p) for p in paths if p[l] == bit}) for bit in (0, 1)]
    layers.append(tuple([index[key(l, c)] for c in g] for g in groups))
    depth = groups[0] + groups[1]
  return num_start, layers


def evaluation_counts(num_layers: int, budget: int | None = None, *, share: bool = True) -> dict:
  """Single-token evaluations per token: {'attention', 'ffn', 'logits'} for one budget.

  budget=None searches all 2^L paths (tree: 2^L - 1 attention, 2^(L+1) - 2 FFN; naive:
  L * 2^L each). Side-by-side budgets are padded to the largest per depth (see module doc).
  """
  num_start, layers = _nodes(num_layers, budget, share)
  sizes = [num_start] + [len(s) + len(b) for s, b in layers]  # nodes at depth 0..L
  return {"attention": sum(sizes[:-1]), "ffn": sum(sizes[1:]), "logits": sizes[-1]}


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Static node tables stacked over budgets [K, ...], padded with invalid entries."""
  num_start: int
  small_parent: tuple  # per layer: [K, S_l] parent position at depth l
  big_parent: tuple  # per layer: [K, G_l]
  valid_leaf: np.ndarray  # [K, S_{L-1} + G_{L-1}]


def _plan(num_layers: int, budgets: tuple[int, ...], share: bool) -> _Plan:
  per_budget = [_nodes(num_layers, k, share) for k in budgets]
  # Padded entries point at parent 0: computed, never valid. reshape keeps a [K, 0] shape.
  pad = lambda rows, n: np.array([r + [0] * (n - len(r)) for r in rows], np.int32).reshape(
      len(rows), n)
  small, big = [], []
  for l in range(num_layers):
    rows = [layers[l] for _, layers in per_budget]
    if l:  # a budget's big group at depth l starts after the small group padded to all budgets
      cut = [len(layers[l - 1][0]) for _, layers in per_budget]
      rows = [tuple([i if i < c else i - c + small[-1].shape[1] for i in g] for g in row)
              for row, c in zip(rows, cut)]
    small.append(pad([s for s, _ in rows], max(len(s) for s, _ in rows)))
    big.append(pad([b for _, b in rows], max(len(b) for _, b in rows)))
  s, g = small[-1].shape[1], big[-1].shape[1]
  last = [layers[-1] for _, layers in per_budget]
  valid = np.array([[i < len(sl) for i in range(s)] + [i < len(bl) for i in range(g)]
                    for sl, bl in last], bool)
  return _Plan(max(n for n, _ in per_budget), tuple(small), tuple(big), valid)


def _attend(cfg: ModelConfig, lp, h_MxPxD, k_MxKxTxH, v_MxKxTxH, t):
  """Layer's attention for P single-token nodes at position t over the cache of tokens < t."""
  m, p, _ = h_MxPxD.shape
  mask_MxPxT = jnp.broadcast_to(jnp.arange(k_MxKxTxH.shape[2]) < t, (m, p, k_MxKxTxH.shape[2]))
  return DecoderLayer(cfg).apply({"params": lp}, h_MxPxD, jnp.full((m, p), t), k_MxKxTxH,
                                 v_MxKxTxH, mask_MxPxT, method=DecoderLayer.attention_over)


def _children(cfg: ModelConfig, lp, h_MxPxD, parent_MxC, route: Route):
  """Gathers the parents of one child group and applies the layer's FFN block with `route`."""
  h_MxCxD = jnp.take_along_axis(h_MxPxD, parent_MxC[..., None], axis=1)
  route_MxC = jnp.full(parent_MxC.shape, int(route), jnp.int32)
  return DecoderLayer(cfg).apply({"params": lp}, h_MxCxD, {"route": route_MxC},
                                 method=DecoderLayer.ffn_block)


@functools.partial(jax.jit, static_argnames=("cfg", "budgets", "share"))
def _search(params, tokens_BxT, targets_BxT, *, cfg: ModelConfig, budgets, share):
  plan = _plan(cfg.num_layers, budgets, share)
  (b, t_len), n_layers, m = tokens_BxT.shape, cfg.num_layers, len(budgets) * tokens_BxT.shape[0]
  per_m = lambda a_KxC: jnp.asarray(np.repeat(a_KxC, b, axis=0))  # budget-major rows
  model = Transformer(cfg)
  x_BxTxD = model.apply({"params": params}, tokens_BxT, method=Transformer.embed_tokens)
  x_TxMxD = jnp.tile(x_BxTxD, (len(budgets), 1, 1)).swapaxes(0, 1)
  y_TxM = jnp.tile(targets_BxT, (len(budgets), 1)).T
  lps = [layer_params(params, l) for l in range(n_layers)]
  rows_M = jnp.arange(m)

  def step(cache, xs):
    k_LxMxKxTxH, v_LxMxKxTxH = cache
    x_MxD, y_M, t = xs
    h = jnp.broadcast_to(x_MxD[:, None], (m, plan.num_start, x_MxD.shape[-1]))
    kv = []
    for l in range(n_layers):  # breadth-first: every node of depth l at once
      h, k_MxPxKxH, v_MxPxKxH = _attend(cfg, lps[l], h, k_LxMxKxTxH[l], v_LxMxKxTxH[l], t)
      kv.append((k_MxPxKxH, v_MxPxKxH))
      groups = [(plan.small_parent[l], Route.SMALL), (plan.big_parent[l], Route.BIG)]
      h = jnp.concatenate([_children(cfg, lps[l], h, per_m(p), r) for p, r in groups
                           if p.shape[1]], axis=1)
    logits_MxCxV = model.apply({"params": params}, h, method=Transformer.logits)
    loss_MxC = cross_entropy(logits_MxCxV, jnp.broadcast_to(y_M[:, None], h.shape[:2]))
    loss_MxC = jnp.where(per_m(plan.valid_leaf), loss_MxC, jnp.inf)
    pos_M = jnp.argmin(loss_MxC, axis=1)
    best_M = loss_MxC[rows_M, pos_M]
    route_LxM, new_k, new_v = [None] * n_layers, [None] * n_layers, [None] * n_layers
    for l in reversed(range(n_layers)):  # walk the chosen leaf back to the root
      num_small = plan.small_parent[l].shape[1]
      route_LxM[l] = jnp.where(pos_M >= num_small, int(Route.BIG), int(Route.SMALL))
      parent_MxC = per_m(np.concatenate([plan.small_parent[l], plan.big_parent[l]], axis=1))
      pos_M = parent_MxC[rows_M, pos_M]
      new_k[l], new_v[l] = kv[l][0][rows_M, pos_M], kv[l][1][rows_M, pos_M]
    k_LxMxKxTxH = k_LxMxKxTxH.at[:, :, :, t].set(jnp.stack(new_k))
    v_LxMxKxTxH = v_LxMxKxTxH.at[:, :, :, t].set(jnp.stack(new_v))
    return (k_LxMxKxTxH, v_LxMxKxTxH), (jnp.stack(route_LxM, -1), best_M)

  cache = jnp.zeros((n_layers, m, cfg.kv_heads, t_len, cfg.head_dim), cfg.activation_dtype)
  _, (route_TxMxL, loss_TxM) = jax.lax.scan(step, (cache, cache),
                                            (x_TxMxD, y_TxM, jnp.arange(t_len)))
  route_KxBxTxL = route_TxMxL.swapaxes(0, 1).reshape(len(budgets), b, t_len, n_layers)
  loss_KxBxT = loss_TxM.T.reshape(len(budgets), b, t_len)
  return route_KxBxTxL.astype(jnp.int32), loss_KxBxT.astype(jnp.float32)


def _checked_budgets(cfg: ModelConfig, tokens_BxT, targets_BxT, budgets) -> tuple[int, ...]:
  if not cfg.duo:
    raise ValueError("the sequential oracle needs a Duo model (model.duo=True)")
  if len(tokens_BxT.shape) != 2 or tokens_BxT.shape != targets_BxT.shape:
    raise ValueError(f"tokens_BxT and targets_BxT must be [batch, tokens] of the same shape, "
                     f"got {tokens_BxT.shape} and {targets_BxT.shape}")
  if isinstance(budgets, (int, np.integer)) or not len(budgets):
    raise ValueError(f"budgets must be a non-empty sequence of integers, got {budgets!r}")
  return tuple(validate_budget(k, num_layers=cfg.num_layers, name=f"budgets[{i}]")
               for i, k in enumerate(budgets))


def sequential_oracle(params, cfg: ModelConfig, tokens_BxT, targets_BxT, budgets):
  """Context-consistent oracle, prefix-shared tree per token: (route_KxBxTxL int32, loss_KxBxT float32).

  For budget budgets[i], token t's route has exactly that many BIG layers (others SMALL) and
  is chosen given the routes already chosen for tokens < t; loss_KxBxT is its cross-entropy.
  """
  budgets = _checked_budgets(cfg, tokens_BxT, targets_BxT, budgets)
  return _search(params, tokens_BxT, targets_BxT, cfg=cfg, budgets=budgets, share=True)


def naive_sequential_oracle(params, cfg: ModelConfig, tokens_BxT, targets_BxT, budgets):
  """Same results as `sequential_oracle`, evaluating every path of a token on its own."""
  budgets = _checked_budgets(cfg, tokens_BxT, targets_BxT, budgets)
  return _search(params, tokens_BxT, targets_BxT, cfg=cfg, budgets=budgets, share=False)
