"""The hand-written SwiGLU backward equals jax.grad of the plain expression."""

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.nn.ffn import swiglu


def _plain(x, gate, up, down):
  return (jax.nn.silu(x @ gate) * (x @ up)) @ down


def test_swiglu_forward_and_gradients_match_autodiff():
  keys = jax.random.split(jax.random.key(0), 5)
  x = jax.random.normal(keys[0], (2, 5, 8))
  gate, up = (jax.random.normal(k, (8, 12)) for k in keys[1:3])
  down = jax.random.normal(keys[3], (12, 8))
  cotangent = jax.random.normal(keys[4], (2, 5, 8))
  loss = lambda f: lambda *args: jnp.sum(f(*args) * cotangent)
  np.testing.assert_allclose(swiglu(x, gate, up, down), _plain(x, gate, up, down), rtol=1e-5,
                             atol=1e-5)
  ours = jax.grad(loss(swiglu), argnums=(0, 1, 2, 3))(x, gate, up, down)
  reference = jax.grad(loss(_plain), argnums=(0, 1, 2, 3))(x, gate, up, down)
  for a, b in zip(ours, reference):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
