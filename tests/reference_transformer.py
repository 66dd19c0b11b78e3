"""A NumPy Duo transformer written independently of adaptive_jax.nn, token by token.

Attention is computed per query token over its prefix; each token's FFN is chosen by its own
route in a Python loop. Used to check the masked dense routing of the JAX model.
"""

import numpy as np


def _rms_norm(x, scale, eps=1e-6):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _rope(x_TxNxH, theta):
  t, _, h = x_TxNxH.shape
  freqs = theta ** (-np.arange(0, h, 2) / h)
  ang = np.arange(t)[:, None] * freqs[None, :]  # T x H/2
  cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
  x1, x2 = x_TxNxH[..., : h // 2], x_TxNxH[..., h // 2:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _silu(x):
  return x / (1.0 + np.exp(-x))


def _ffn(x_D, w):
  return (_silu(x_D @ w["gate"]) * (x_D @ w["up"])) @ w["down"]


def forward(params, tokens_BxT, route_BxTxL, *, theta=10_000.0):
  """Logits [B, T, V] with float64 math; route ids 0 skip, 1 small, 2 big."""
  p = {k: v for k, v in params.items()}
  emb = np.asarray(p["embed"]["embedding"], np.float64)
  layers = p["layers"]
  num_layers = np.asarray(layers["ffn_norm"]["scale"]).shape[0]
  b_size, t_size = tokens_BxT.shape
  d = emb.shape[1]
  out = np.zeros((b_size, t_size, emb.shape[0]))
  for b in range(b_size):
    x = emb[tokens_BxT[b]] * np.sqrt(d)
    for l in range(num_layers):
      lay = lambda *path: np.asarray(_get(layers, path)[l], np.float64)
      h = _rms_norm(x, lay("attention_norm", "scale"))
      q = _rope(np.einsum("td,dnh->tnh", h, lay("attention", "query")), theta)
      k = _rope(np.einsum("td,dnh->tnh", h, lay("attention", "key")), theta)
      v = np.einsum("td,dnh->tnh", h, lay("attention", "value"))
      att = np.zeros_like(q)
      for t in range(t_size):
        scores = np.einsum("nh,snh->ns", q[t], k[: t + 1]) / np.sqrt(q.shape[-1])
        w = np.exp(scores - scores.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        att[t] = np.einsum("ns,snh->nh", w, v[: t + 1])
      x = x + np.einsum("tnh,nhd->td", att, lay("attention", "out"))
      h = _rms_norm(x, lay("ffn_norm", "scale"))
      for t in range(t_size):
        route = int(route_BxTxL[b, t, l])
        if route == 0:
          continue
        module = "small" if route == 1 else "big"
        weights = {n: lay("duo_ffn", module, n) for n in ("gate", "up", "down")}
        x[t] = x[t] + _ffn(h[t], weights)
    x = _rms_norm(x, np.asarray(p["final_norm"]["scale"], np.float64))
    out[b] = x @ emb.T
  return out


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree
