"""DeepConf (Fu, Wang, Tian, Zhao, arXiv 2508.15260): token and group confidence, DeepConf-online.

B rows (traces), V vocabulary, M new tokens; Q questions (not quantile levels), N sample
slots, W warm-up traces.
Matches facebookresearch/deepconf, helper.py and deepconf-online.py:
- token confidence C_i = -(1/k) sum_j log P_i(j) over the top k tokens (`compute_confidence`,
  vLLM `logprobs=20`);
- a trace's lowest group confidence is the minimum over sliding windows of `window` tokens of
  the window's mean C (`compute_least_grouped`, then `min`); a trace shorter than the window
  has one window, all its tokens;
- the online bar is np.percentile(warm-up lowest confidences, 100 - keep_percent), linear
  interpolation (`CONFIDENCE_PERCENTILE = 90` is DeepConf-low, keep 10%; 10 is DeepConf-high);
  a trace is stopped when its group confidence falls below the bar (`min_conf < conf_bar`),
  kept when >= it.
Not copied: their rounding of C and window means to 3 decimals; vLLM adding the sampled token
to the top-20 when it is not among them; and a trace with no tokens, which there has lowest
confidence 0 and here +inf (the minimum over no windows, so it is never stopped).
The consensus stop (`consensus`) is the paper's Algorithm 2 (beta = V(top) / sum V >= tau,
tau = 0.95); the released code has no such step.
"""

import jax
import jax.numpy as jnp
import numpy as np

from adaptive_jax.sampler import selection


def _check_int(value, name: str, low: int = 1, high: int | None = None) -> None:
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low
      or (high is not None and value > high)):
    allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
    raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")


def _check_real(value, name: str, low: float, high: float, what: str) -> None:
  if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
      or not low < value <= high):
    raise ValueError(f"{name} must be {what} in ({low}, {high}], got {value!r}")


def token_confidence(logits_BxV, k: int):
  """conf_B = -mean of the k largest log-probabilities under softmax(logits_BxV) (DeepConf C_i).

  High when the distribution is peaked. Any leading dims (...xV -> ...); float32.
  """
  logits_BxV = jnp.asarray(logits_BxV)
  if logits_BxV.ndim < 1:
    raise ValueError(f"logits_BxV needs a last axis V, got shape {logits_BxV.shape}")
  _check_int(k, "k", 1, logits_BxV.shape[-1])
  logits_BxV = logits_BxV.astype(jnp.float32)
  # log p = logit - logsumexp: the k largest log-probabilities are the k largest logits.
  top_BxK, _ = jax.lax.top_k(logits_BxV, k)
  return jax.nn.logsumexp(logits_BxV, axis=-1) - jnp.mean(top_BxK, axis=-1)


def lowest_group_confidence(conf_BxM, lengths_B, window: int):
  """lowest_B: min over windows of `window` consecutive tokens in each row's first lengths_B
  of the window's mean confidence; a row shorter than the window has one window (all its
  tokens), an empty row +inf. Tokens past a row's length are ignored.
  """
  _check_int(window, "window")
  conf_BxM = jnp.asarray(conf_BxM, jnp.float32)
  if conf_BxM.ndim != 2:
    raise ValueError(f"conf_BxM must be 2-d [B, M], got shape {conf_BxM.shape}")
  m = conf_BxM.shape[1]
  lengths_B = jnp.clip(jnp.asarray(lengths_B, jnp.int32), 0, m)
  mask_BxM = jnp.arange(m)[None, :] < lengths_B[:, None]
  conf_BxM = jnp.where(mask_BxM, conf_BxM, 0.0)
  count_B = jnp.maximum(lengths_B, 1).astype(jnp.float32)
  mean_B = conf_BxM.sum(-1) / count_B
  # Window sums as differences of a cumulative sum. Centring on the row mean first keeps the
  # float32 prefix sums small: uncentred, 64k tokens of C ~ 15 reach 1e6, where float32
  # spacing is 0.06, up to 3e-5 on a 2048-token window mean.
  centred_BxM = jnp.where(mask_BxM, conf_BxM - mean_B[:, None], 0.0)
  cum_BxM1 = jnp.concatenate([jnp.zeros_like(mean_B)[:, None], jnp.cumsum(centred_BxM, -1)], -1)
  if window <= m:
    # Window starting at i covers tokens i .. i + window - 1; it exists when i + window <= length.
    sums_BxJ = cum_BxM1[:, window:] - cum_BxM1[:, :m + 1 - window]
    starts_J = jnp.arange(m + 1 - window)
    full_BxJ = jnp.where(starts_J[None, :] + window <= lengths_B[:, None], sums_BxJ / window,
                         jnp.inf)
    full_B = mean_B + full_BxJ.min(-1)
  else:
    full_B = jnp.full_like(mean_B, jnp.inf)  # no row can hold a full window
  short_B = jnp.where(lengths_B > 0, mean_B, jnp.inf)
  return jnp.where(lengths_B >= window, full_B, short_B)


def online_threshold(warmup_conf_QxW, valid_QxW, *, keep_percent: float):
  """bar_Q = np.percentile(valid warm-up lowest confidences, 100 - keep_percent), linear.

  keep_percent = 10 is DeepConf-low (90th percentile), 90 DeepConf-high (10th). A question
  with no valid warm-up trace gets -inf: no bar, nothing stopped.
  """
  _check_real(keep_percent, "keep_percent", 0, 100, "a percentage")
  warmup_conf_QxW = jnp.asarray(warmup_conf_QxW, jnp.float32)
  valid_QxW = jnp.asarray(valid_QxW, bool)
  if warmup_conf_QxW.ndim != 2 or valid_QxW.shape != warmup_conf_QxW.shape:
    raise ValueError(f"warmup_conf_QxW and valid_QxW must share a [Q, W] shape, got "
                     f"{warmup_conf_QxW.shape} and {valid_QxW.shape}")
  # Invalid entries sort last (+inf), so the n valid values are the first n.
  sorted_QxW = jnp.sort(jnp.where(valid_QxW, warmup_conf_QxW, jnp.inf), axis=-1)
  n_Q = valid_QxW.sum(-1)
  # NumPy's "linear" method: virtual index h = (n - 1) q / 100 between order statistics.
  h_Q = (jnp.maximum(n_Q, 1) - 1) * ((100 - keep_percent) / 100)
  lo_Q = jnp.floor(h_Q).astype(jnp.int32)
  hi_Q = jnp.minimum(lo_Q + 1, jnp.maximum(n_Q, 1) - 1)
  at = lambda i_Q: jnp.take_along_axis(sorted_QxW, i_Q[:, None], axis=-1)[:, 0]
  low_Q, high_Q = at(lo_Q), at(hi_Q)
  frac_Q = h_Q - lo_Q
  # An exact order statistic or equal neighbours (+inf from empty traces too): no inf * 0.
  bar_Q = jnp.where((frac_Q == 0) | (high_Q == low_Q), low_Q,
                    low_Q + (high_Q - low_Q) * frac_Q)
  return jnp.where(n_Q > 0, bar_Q, -jnp.inf)


def consensus(answers_QxN, weights_QxN, valid_QxN, *, tau: float = 0.95):
  """done_Q: the confidence-weighted vote's top answer holds >= tau of the counted weight.

  Weights >= 0 (DeepConf: each trace's lowest group confidence); samples counted as in
  selection (valid and with an answer). No counted weight: False.
  """
  _check_real(tau, "tau", 0, 1, "a fraction")
  total_QxN, _ = selection.vote_totals(answers_QxN, weights_QxN, valid_QxN)
  all_Q = total_QxN.sum(-1)
  return (all_Q > 0) & (total_QxN.max(-1) >= tau * all_Q)
