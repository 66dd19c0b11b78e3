"""Process reward model: a dense transformer read at the end of the prefix, with a sigmoid head.

Base PRM (`num_quantiles=0`): one logit, p = sigmoid(head(h)). Calibrated PRM
(`num_quantiles=Q`): `delta` (Q + 1 outputs) and `base_gain`, initialized to exactly 0 so
every output starts at the base probability, give Q quantiles sigmoid(head(h) + delta_q(h)) in
level order and the mean, the calibrated success probability
(1 + base_gain) sigmoid(head(h)) + delta_mean(h): linear in probability space, fit by least
squares (the Brier score) and clipped to [0, 1] when read (`probabilities`). Linear rather than
a sigmoid: on the arithmetic task a sigmoid mean fit by squared error overfits the questions it
sees (docs/calibrated_prm.md). `h` = [h_last; h_mean]: the final-normed hidden state
of the last real (non-pad) token, which for a record is the step boundary "\n" that ends its
text, and the mean of the final-normed hidden states of all real tokens. The mean carries what
the whole question says about its difficulty: on the arithmetic task a ridge probe of the
policy's states predicts the MC target with Brier 0.054 from [h_last; h_mean], 0.064 from
h_last alone (docs/calibrated_prm.md).

Padding: `encode_texts` pads on the right, the one layout it offers. Attention is causal, so
the last real token never sees the pads after it and the output is exactly that of the
unpadded sequence.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.policy.prompt import encode_prompt
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer

TOKENIZER = ByteTokenizer()
MEAN = -1  # column of the calibrated PRM's outputs that holds the mean (after the Q quantiles)


def last_real_index(tokens_BxT, pad_id: int = TOKENIZER.pad_id):
  """Index of each row's last non-pad token (0 for an all-pad row)."""
  positions_BxT = jnp.arange(tokens_BxT.shape[1])[None, :]
  return jnp.max(jnp.where(tokens_BxT != pad_id, positions_BxT, 0), axis=1)


class PRM(nn.Module):
  """tokens_BxT -> the base PRM's success logit_Bx1, or for a calibrated PRM the pair
  (quantile_logits_BxQ, mean_B) (mean_B unclipped); `probabilities` reads either."""
  cfg: ModelConfig
  num_quantiles: int = 0  # 0: base PRM with one output; Q > 0: Q quantiles and the mean

  def setup(self):
    if self.cfg.duo:
      raise ValueError("model.duo must be False: the PRM backbone is a dense transformer")
    if self.num_quantiles < 0:
      raise ValueError(f"num_quantiles must be >= 0, got {self.num_quantiles}")
    # params["backbone"] has exactly a Transformer's structure: a policy's params drop in.
    self.backbone = Transformer(self.cfg)
    self.head = nn.Dense(1, dtype=jnp.float32, name="head")
    if self.num_quantiles:
      self.delta = nn.Dense(self.num_quantiles + 1, dtype=jnp.float32, name="delta",
                            kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)
      self.base_gain = self.param("base_gain", nn.initializers.zeros, (), jnp.float32)

  def __call__(self, tokens_BxT, last_B=None):
    """`last_B`: index of each row's last real token; by default the last non-pad one."""
    return self.outputs(self.readout(tokens_BxT, last_B))

  def readout(self, tokens_BxT, last_B=None):
    """h_Bx2D = [h_last; h_mean], what the output layers read (float32)."""
    positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    normed_BxTxD = self.backbone(tokens_BxT, output="hidden").astype(jnp.float32)
    last_B = last_real_index(tokens_BxT) if last_B is None else last_B
    # Positions after the last real token (pads, or anything else) are outside the prefix.
    inside_BxT = positions_BxT <= last_B[:, None]
    h_mean_BxD = (jnp.sum(jnp.where(inside_BxT[..., None], normed_BxTxD, 0.0), axis=1)
                  / (last_B[:, None] + 1).astype(jnp.float32))
    return jnp.concatenate([normed_BxTxD[jnp.arange(tokens_BxT.shape[0]), last_B], h_mean_BxD],
                           axis=-1)

  def position_readout(self, tokens_BxT, positions_BxL=None):
    """h = [h_t; mean of h_0..h_t] at every position t (h_BxTx2D), or at `positions_BxL` only
    (h_BxLx2D): `readout` of the prefix cut after t, for all of them in one pass (the attention
    is causal, so the states at t see nothing after t)."""
    normed_BxTxD = self.backbone(tokens_BxT, output="hidden").astype(jnp.float32)
    count_1xTx1 = jnp.arange(1, tokens_BxT.shape[1] + 1, dtype=jnp.float32)[None, :, None]
    h_BxTxF = jnp.concatenate([normed_BxTxD, jnp.cumsum(normed_BxTxD, axis=1) / count_1xTx1], -1)
    if positions_BxL is None:
      return h_BxTxF
    return jnp.take_along_axis(h_BxTxF, positions_BxL[..., None], axis=1)

  def outputs(self, h_Bx2D):
    """The output layers on `readout`'s features: logit_Bx1, or (quantile_logits_BxQ, mean_B)."""
    logit_Bx1 = self.head(h_Bx2D)
    if not self.num_quantiles:
      return logit_Bx1
    delta_BxK = self.delta(h_Bx2D)
    mean_B = (1 + self.base_gain) * jax.nn.sigmoid(logit_Bx1[:, 0]) + delta_BxK[:, MEAN]
    return logit_Bx1 + delta_BxK[:, :MEAN], mean_B


def probabilities(outputs):
  """probs_BxK in [0, 1] from PRM outputs: [sigmoid(logit)] for a base PRM; for a calibrated one
  a column per quantile level, then the mean clipped to [0, 1] (column `MEAN`)."""
  if not isinstance(outputs, tuple):
    return jax.nn.sigmoid(outputs)
  quantile_logits_BxQ, mean_B = outputs
  return jnp.concatenate([jax.nn.sigmoid(quantile_logits_BxQ),
                          jnp.clip(mean_B, 0.0, 1.0)[:, None]], axis=-1)


def encode_texts(texts: Sequence[str], max_len: int, *,
                 tokenizer: ByteTokenizer = TOKENIZER) -> np.ndarray:
  """int32 tokens_NxT of each text as the policy reads it (`policy.prompt.encode_prompt`:
  EOS, then the text), padded to the longest (T <= max_len).

  `tokenizer`: the policy's (byte, or a pretrained model's `TaskTokenizer`); its pad must be
  the PRM's (`last_real_index` finds a row's end by it).
  """
  if tokenizer.pad_id != TOKENIZER.pad_id:
    raise ValueError(f"tokenizer.pad_id must be {TOKENIZER.pad_id}, the PRM's pad id, got "
                     f"{tokenizer.pad_id}")
  ids = [encode_prompt(tokenizer, text) for text in texts]
  if not ids:
    raise ValueError("texts must be non-empty")
  for i, row in enumerate(ids):
    if len(row) > max_len:
      raise ValueError(f"text of record {i} is {len(row)} tokens with the leading eos, longer "
                       f"than max_len={max_len}: {texts[i][:40]!r}...")
  tokens_NxT = np.full((len(ids), max(map(len, ids))), tokenizer.pad_id, np.int32)
  for i, row in enumerate(ids):
    tokens_NxT[i, :len(row)] = row
  return tokens_NxT


def record_field(records: Sequence[dict], field: str) -> np.ndarray:
  """One field of every record as an array; ValueError naming the field if missing or bad."""
  if not records:
    raise ValueError("records must be non-empty")
  missing = [i for i, r in enumerate(records) if field not in r]
  if missing:
    raise ValueError(f"record {missing[0]} has no field {field!r}")
  if field == "text":
    bad = [i for i, r in enumerate(records) if not isinstance(r["text"], str)]
    if bad:
      raise ValueError(f"record {bad[0]} field 'text' must be a str, got {records[bad[0]]['text']!r}")
    return np.asarray([r["text"] for r in records], dtype=object)
  values = np.asarray([r[field] for r in records], np.float32)
  bad = np.flatnonzero(~((values >= 0) & (values <= 1)))
  if bad.size:
    raise ValueError(f"record {bad[0]} field {field!r} must be in [0, 1], "
                     f"got {records[bad[0]][field]!r}")
  return values


def encode_records(records: Sequence[dict], max_len: int, *, tokenizer=TOKENIZER) -> np.ndarray:
  """tokens_NxT of the records' `text` fields (see `encode_texts`)."""
  return encode_texts(list(record_field(records, "text")), max_len, tokenizer=tokenizer)
