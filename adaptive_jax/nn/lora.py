"""Low-rank adapters (LoRA) on the transformer's kernels, as a reparametrization of the params.

For each adapted kernel W of a layer, W' = W + (alpha / rank) * A @ B with A [in, rank] and
B [rank, out]; B starts at zero, so the adapted model starts exactly at the base model. The
adapters live in their own tree beside the (frozen) params and are merged before `apply`:
the model code does not change, and a merged tree is a plain params tree (`predict`, checkpoints).

The kernels are stacked over layers by `nn.scan` (leading axis L); each is read as a matrix
[in, out] per layer, with `in` its input axes: `embed` for query/key/value/gate/up, (heads, kv)
for out, `mlp` for down.

Why not qwix (tried first, qwix 0.1.8): `qwix.apply_lora_to_model` intercepts dot_general /
einsum inside module methods. Its einsum path sets an attribute on the module, which
setup-style linen modules refuse (`SetAttributeFrozenModuleError`), and the FFN kernels are
used inside a `custom_vjp` (nn/ffn.py), where interception cannot see them. Restricted to
dot_general it adapts only the `nn.Dense` heads. Merging at the params level has neither issue.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# Number of input axes of each adaptable kernel, after the leading layer axis.
INPUT_AXES = {"query": 1, "key": 1, "value": 1, "out": 2, "gate": 1, "up": 1, "down": 1}


def _adapted(path: tuple[str, ...], targets: Sequence[str]) -> bool:
  return path[0] == "layers" and path[-1] in targets


def init_lora(backbone_params, *, rank: int, key, targets: Sequence[str] = tuple(INPUT_AXES)):
  """Adapters {path: {"a": A_LxIxR, "b": B_LxRxO}} for the kernels named in `targets`.

  `backbone_params`: unboxed Transformer params. A ~ N(0, 1 / in), B = 0.
  """
  if rank < 1:
    raise ValueError(f"lora rank must be >= 1, got {rank}")
  unknown = sorted(set(targets) - set(INPUT_AXES))
  if unknown or not targets:
    raise ValueError(f"lora targets must be a non-empty subset of {sorted(INPUT_AXES)}, "
                     f"got {list(targets)}")
  flat = traverse_util.flatten_dict(backbone_params)
  lora = {}
  for i, (path, w) in enumerate(sorted(flat.items())):
    if not _adapted(path, targets):
      continue
    if not jnp.issubdtype(w.dtype, jnp.floating):
      raise ValueError(f"lora target {'/'.join(path)} is {w.dtype} (model.weight_quant int8?); "
                       "adapters train on float params")
    num_in = INPUT_AXES[path[-1]]
    fan_in = int(np.prod(w.shape[1:1 + num_in]))
    fan_out = int(np.prod(w.shape[1 + num_in:]))
    a_LxIxR = jax.random.normal(jax.random.fold_in(key, i), (w.shape[0], fan_in, rank),
                                jnp.float32) / np.sqrt(fan_in)
    lora["/".join(path)] = {"a": a_LxIxR, "b": jnp.zeros((w.shape[0], rank, fan_out), jnp.float32)}
  if not lora:
    raise ValueError(f"no kernel of the backbone matches the lora targets {list(targets)}")
  return lora


def merge_lora(backbone_params, lora, *, alpha: float, rank: int):
  """Backbone params with every adapted kernel replaced by W + (alpha / rank) * A @ B."""
  if not (np.isfinite(alpha) and alpha > 0):
    raise ValueError(f"lora alpha must be a finite number > 0, got {alpha!r}")
  if rank < 1:
    raise ValueError(f"lora rank must be >= 1, got {rank}")
  flat = traverse_util.flatten_dict(backbone_params)
  for name, ab in lora.items():
    path = tuple(name.split("/"))
    if path not in flat:
      raise ValueError(f"lora adapter {name!r} has no kernel in the params")
    w = flat[path]
    if not jnp.issubdtype(w.dtype, jnp.floating):
      raise ValueError(f"lora adapter {name!r}: its kernel is {w.dtype} (model.weight_quant "
                       "int8?); merge adapters into float params, then quantize")
    delta_LxIxO = jnp.einsum("lir,lro->lio", ab["a"], ab["b"]) * (alpha / rank)
    flat[path] = w + delta_LxIxO.reshape(w.shape).astype(w.dtype)
  return traverse_util.unflatten_dict(flat)
