"""Greedy decoding by full recompute: the reference the KV-cache sampler is checked against."""

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.nn.transformer import Transformer


def greedy_full_recompute(params, cfg, prompts, num_new: int) -> list[list[int]]:
  """Each prompt followed by `num_new` greedy tokens; every step runs the whole sequence,
  right-padded to one length (causal, so the padding after a row changes nothing)."""
  forward = jax.jit(lambda p, t: Transformer(cfg).apply({"params": p}, t))
  seqs = [list(p) for p in prompts]
  for _ in range(num_new):
    tokens_BxT = np.zeros((len(seqs), max(map(len, prompts)) + num_new), np.int32)
    for b, seq in enumerate(seqs):
      tokens_BxT[b, :len(seq)] = seq
    logits_BxTxV = forward(params, jnp.asarray(tokens_BxT))
    for b, seq in enumerate(seqs):
      seq.append(int(jnp.argmax(logits_BxTxV[b, len(seq) - 1])))
  return seqs
