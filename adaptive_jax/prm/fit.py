"""Training the PRM: a base PRM on final-outcome labels, then a calibrated head on MC targets.

`train_base_prm` fits binary cross-entropy on `response_correct`: every prefix of a response
gets that response's final outcome, as public PRMs are trained (or on another 0/1 field: the
step verifier's exact step labels, step_verifier.py). `calibrate_prm` adds Q + 1
offsets (`delta`, zero at the start, so every output starts at the base probability): Q
quantiles fit by the pinball loss and the mean fit by the squared error (the Brier score)
against the MC `target`, as the reference code's "wql" and "mse" losses (model.py says why the
mean is corrected in probability space). What trains is the `adapter`: "head" (the output
layer alone, `head` for the base PRM, `delta` and `base_gain` when calibrating, fit on the frozen
backbone's features computed once), "lora" (that, the final norm and low-rank adapters on the
attention and FFN kernels, as the paper; see nn/lora.py), or "full" (everything). Frozen leaves
get optax `set_to_zero` and `stop_gradient`: with "lora" the backward pass runs through every
layer to reach the adapters, but computes no gradient for the frozen kernels.

Batches are drawn on device from the seed (step i uses `fold_in(key, i)`, with replacement),
so a run is a pure function of (records, config, seed). Each fit returns (params, losses_S),
the loss of every step, and raises `DivergedError`, naming its `run`, when a loss is not finite.
"""

import collections
import functools
import hashlib
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from adaptive_jax.nn import lora
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.prm import metrics, step_verifier
from adaptive_jax.prm.model import PRM, TOKENIZER, encode_records, probabilities, record_field

_GRAD_CLIP = 1.0
_CHECK_EVERY = 100  # steps between finiteness checks: each one waits for the device


class DivergedError(FloatingPointError):
  """A fit's loss became NaN or infinite."""


def _check_training(steps: int, batch_size: int, learning_rate: float):
  if steps < 0:
    raise ValueError(f"steps must be >= 0, got {steps}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")


def init_params(model_cfg: ModelConfig, num_quantiles: int, seq_len: int, seed: int):
  """Unboxed params of `PRM(model_cfg, num_quantiles)`."""
  tokens_1xT = jnp.zeros((1, seq_len), jnp.int32)
  return nn.meta.unbox(PRM(model_cfg, num_quantiles).init(jax.random.key(seed), tokens_1xT)["params"])


def _check_finite(run: str, losses_S: np.ndarray, first_step: int, steps: int) -> None:
  bad = np.flatnonzero(~np.isfinite(losses_S))
  if bad.size:
    step = first_step + int(bad[0])
    raise DivergedError(f"{run}: the loss diverged to {losses_S[bad[0]]} at step {step} of "
                        f"{steps}; lower the learning rate or check the records")


def _fit(params, loss_fn, tx, data, *, steps: int, batch_size: int, key, run: str):
  """(params, losses_S) after `steps` updates of loss_fn(params, batch); step i samples its batch
  with fold_in(key, i). Raises DivergedError naming `run` once a loss is not finite."""
  num = len(jax.tree.leaves(data)[0])

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, data, key):
    idx_B = jax.random.randint(key, (batch_size,), 0, num)
    batch = jax.tree.map(lambda x: x[idx_B], data)
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  # A copy: the step donates its params, and they may share buffers with the caller's.
  params = jax.tree.map(jnp.array, params)
  opt_state = tx.init(params)
  data = jax.tree.map(jnp.asarray, data)
  losses, checked = [], 0
  for i in range(steps):
    params, opt_state, loss = step(params, opt_state, data, jax.random.fold_in(key, i))
    losses.append(loss)
    if i + 1 == steps or (i + 1) % _CHECK_EVERY == 0:
      _check_finite(run, np.asarray(jnp.stack(losses[checked:])), checked, steps)
      checked = i + 1
  return params, np.asarray(jnp.stack(losses) if losses else jnp.zeros((0,)), np.float32)


def _adamw(learning_rate: float | optax.Schedule, weight_decay: float):
  return optax.chain(optax.clip_by_global_norm(_GRAD_CLIP),
                     optax.adamw(learning_rate, weight_decay=weight_decay))


ADAPTERS = ("head", "lora", "full")
CALIBRATION_LEAVES = ("delta", "base_gain")  # what calibration adds to a base PRM's params


def _check_adapter(adapter: str):
  if adapter not in ADAPTERS:
    raise ValueError(f"adapter must be one of {ADAPTERS}, got {adapter!r}")


def _in_batches(fn, *arrays_N: np.ndarray, batch_size: int) -> np.ndarray:
  """fn(*row batches of arrays_N) over row batches, concatenated. The last batch is padded with
  copies of the first row, so every batch has one shape: one compile."""
  num = len(arrays_N[0])
  batch_size = min(batch_size, num)
  arrays_N = [np.concatenate([x, np.repeat(x[:1], -num % batch_size, 0)]) for x in arrays_N]
  out = [fn(*(x[i:i + batch_size] for x in arrays_N))
         for i in range(0, len(arrays_N[0]), batch_size)]
  return np.asarray(jnp.concatenate(out))[:num]


_FEATURES_CACHED = 8  # entries of the readout cache (records x 2D float32 each)
_features_cache: collections.OrderedDict = collections.OrderedDict()


def _digest(arrays) -> str:
  digest = hashlib.sha1()
  for leaf in arrays:
    leaf = np.asarray(leaf)
    digest.update(str((leaf.shape, leaf.dtype)).encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()


def readout_features(params, model_cfg: ModelConfig, tokens_NxT: np.ndarray,
                     batch_size: int = 256) -> np.ndarray:
  """h_Nx2D = `PRM.readout` of every row: the backbone's features, which the output layers read.

  They depend on the backbone's weights and the tokens only, and a study reads the same records
  through the same frozen backbone many times (the base PRM's head, each calibration candidate,
  every prediction), so the last few are kept, keyed by a digest of both: with a 135M-parameter
  backbone on CPU the forward pass is the whole cost.
  """
  key = (model_cfg, _digest(jax.tree.leaves(params["backbone"])), _digest([tokens_NxT]))
  if key in _features_cache:
    _features_cache.move_to_end(key)
    return _features_cache[key]
  features = _in_batches(lambda t: _readout(params, t, model_cfg=model_cfg), tokens_NxT,
                         batch_size=batch_size)
  _features_cache[key] = features
  while len(_features_cache) > _FEATURES_CACHED:
    _features_cache.popitem(last=False)
  return features


@functools.partial(jax.jit, static_argnames=("model_cfg",))
def _readout(params, tokens_BxT, *, model_cfg: ModelConfig):
  # params as an argument, not a closure: closed-over arrays would be baked into the program.
  return PRM(model_cfg).apply({"params": {"backbone": params["backbone"]}}, tokens_BxT,
                              method=PRM.readout)


def _position_features(params, model_cfg: ModelConfig, tokens_NxT: np.ndarray,
                       positions_NxL: np.ndarray, batch_size: int = 64) -> np.ndarray:
  """h_NxLx2D = `PRM.position_readout` of every row at its positions (frozen backbone)."""
  return _in_batches(lambda t, pos: _position_readout(params, t, pos, model_cfg=model_cfg),
                     tokens_NxT, positions_NxL, batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("model_cfg",))
def _position_readout(params, tokens_BxT, positions_BxL, *, model_cfg: ModelConfig):
  return PRM(model_cfg).apply({"params": {"backbone": params["backbone"]}}, tokens_BxT,
                              positions_BxL, method=PRM.position_readout)


def _fit_adapter(params, model: PRM, loss_fn, heads: tuple[str, ...], *, adapter: str,
                 lora_rank: int, lora_alpha: float, learning_rate: float | optax.Schedule,
                 weight_decay: float,
                 tokens_NxT: np.ndarray, labels: dict, steps: int, batch_size: int, seed: int,
                 run: str, positions_NxL: np.ndarray | None = None):
  """Trains `adapter` to minimize loss_fn(model outputs, batch) over `labels` (field -> [N]);
  returns (the params with any LoRA adapters merged in, losses_S).

  "head" trains only the `heads` leaves, on features computed once: the frozen backbone's
  `readout` of every record, so a step costs the output layer alone. "lora" and "full" also
  train the backbone's final norm (and more), so their steps run the backbone.
  `positions_NxL`: read each row at these positions (`PRM.position_readout`) instead of at its
  last real token; the outputs then come per position (logit_BxLx1 for a base PRM).
  """
  trainable = {"params": params}
  batch_key, lora_key = jax.random.split(jax.random.key(seed))
  if adapter == "lora":
    trainable["lora"] = lora.init_lora(params["backbone"], rank=lora_rank, key=lora_key)

  def trains(path):
    if path[0] == "lora" or adapter == "full" or path[1] in heads:
      return True
    return adapter == "lora" and path[1:3] == ("backbone", "final_norm")

  def merged(trainable):
    # Frozen leaves get symbolic-zero gradients: no gradient is computed for them.
    params = traverse_util.path_aware_map(
        lambda path, p: p if trains(("params", *path)) else jax.lax.stop_gradient(p),
        trainable["params"])
    if "lora" in trainable:
      params = {**params, "backbone": lora.merge_lora(params["backbone"], trainable["lora"],
                                                      alpha=lora_alpha, rank=lora_rank)}
    return params

  per_position = lambda p, h: model.apply({"params": p}, h, method=PRM.outputs)
  if adapter == "head":
    features = (readout_features(params, model.cfg, tokens_NxT) if positions_NxL is None else
                _position_features(params, model.cfg, tokens_NxT, positions_NxL))
    data = {"inputs": features, **labels}
    apply = lambda p, batch: per_position(p, batch["inputs"])
  elif positions_NxL is None:
    data = {"inputs": tokens_NxT, **labels}
    apply = lambda p, batch: model.apply({"params": p}, batch["inputs"])
  else:
    data = {"inputs": tokens_NxT, "positions": positions_NxL, **labels}
    apply = lambda p, batch: per_position(p, model.apply(
        {"params": p}, batch["inputs"], batch["positions"], method=PRM.position_readout))
  labels_tree = traverse_util.path_aware_map(
      lambda path, _: "train" if trains(path) else "freeze", trainable)
  tx = optax.multi_transform({"train": _adamw(learning_rate, weight_decay),
                              "freeze": optax.set_to_zero()}, labels_tree)
  trained, losses_S = _fit(
      trainable, lambda t, batch: loss_fn(apply(merged(t), batch), batch), tx, data,
      steps=steps, batch_size=batch_size, key=batch_key, run=run)
  return jax.jit(merged)(trained), losses_S


def train_base_prm(records: Sequence[dict], model_cfg: ModelConfig, *, steps: int,
                   batch_size: int, learning_rate: float, seed: int, weight_decay: float = 1e-4,
                   backbone_params=None, adapter: str = "full", lora_rank: int = 8,
                   lora_alpha: float = 16.0, tokenizer=TOKENIZER,
                   label_field: str = "response_correct", run: str = "base PRM"):
  """(base PRM params, losses_S), trained with BCE of sigmoid(logit) on each record's
  `label_field` (in [0, 1]): `response_correct` (final outcomes), or a step verifier's exact
  step labels ("label" of step_verifier.step_examples).

  `backbone_params` (a Transformer's params, e.g. the policy's) replace the random backbone.
  `adapter`: what trains besides the head ("full": the whole backbone; "head": nothing, a value
  head on a frozen backbone; "lora": low-rank adapters and the final norm, merged in).
  `tokenizer`: the policy's, which wrote the records' text. `run` names the fit in errors.
  """
  _check_training(steps, batch_size, learning_rate)
  _check_adapter(adapter)
  tokens_NxT = encode_records(records, model_cfg.max_len, tokenizer=tokenizer)
  labels_N = record_field(records, label_field)
  params = init_params(model_cfg, 0, tokens_NxT.shape[1], seed)
  if backbone_params is not None:
    params = {**params, "backbone": nn.meta.unbox(backbone_params)}
  def loss_fn(logit_Bx1, batch):
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logit_Bx1[:, 0], batch["labels"]))

  return _fit_adapter(params, PRM(model_cfg), loss_fn, ("head",), adapter=adapter,
                      lora_rank=lora_rank, lora_alpha=lora_alpha, learning_rate=learning_rate,
                      weight_decay=weight_decay, tokens_NxT=tokens_NxT,
                      labels={"labels": labels_N}, steps=steps, batch_size=batch_size, seed=seed,
                      run=run)


def train_step_verifier(examples: Sequence[dict], model_cfg: ModelConfig, *, steps: int,
                        batch_size: int, learning_rate: float, seed: int,
                        weight_decay: float = 1e-4, backbone_params=None, adapter: str = "full",
                        lora_rank: int = 8, lora_alpha: float = 16.0, tokenizer=TOKENIZER,
                        run: str = "step verifier"):
  """(base PRM params, losses_S) trained on whole solutions, a label at every line end.

  `examples`: `step_verifier.solution_examples`. Each row is one solution, read at the last
  token of each of its lines (`PRM.position_readout`), with BCE against that line's label
  averaged over the batch's real lines: the same features and labels `train_base_prm` fits on
  `step_examples`, where a solution of L lines costs L rows. The params are a base PRM's, read
  by `scoring.position_probabilities` at every step boundary as any base PRM.
  """
  _check_training(steps, batch_size, learning_rate)
  _check_adapter(adapter)
  tokens_NxT, positions_NxL, labels_NxL, mask_NxL = step_verifier.encode_solutions(
      examples, model_cfg.max_len, tokenizer=tokenizer)
  params = init_params(model_cfg, 0, tokens_NxT.shape[1], seed)
  if backbone_params is not None:
    params = {**params, "backbone": nn.meta.unbox(backbone_params)}

  def loss_fn(logit_BxLx1, batch):
    loss_BxL = optax.sigmoid_binary_cross_entropy(logit_BxLx1[..., 0], batch["labels"])
    mask_BxL = batch["mask"].astype(jnp.float32)
    return jnp.sum(loss_BxL * mask_BxL) / jnp.maximum(jnp.sum(mask_BxL), 1.0)

  return _fit_adapter(params, PRM(model_cfg), loss_fn, ("head",), adapter=adapter,
                      lora_rank=lora_rank, lora_alpha=lora_alpha, learning_rate=learning_rate,
                      weight_decay=weight_decay, tokens_NxT=tokens_NxT,
                      labels={"labels": labels_NxL, "mask": mask_NxL}, steps=steps,
                      batch_size=batch_size, seed=seed, run=run, positions_NxL=positions_NxL)


def calibrate_prm(base_params, records: Sequence[dict], model_cfg: ModelConfig, *,
                  levels: Sequence[float] = (0.1, 0.5, 0.9), steps: int, batch_size: int,
                  learning_rate: float, seed: int, adapter: str = "head", lora_rank: int = 8,
                  lora_alpha: float = 16.0, tokenizer=TOKENIZER, run: str = "calibrated PRM"):
  """(calibrated PRM params, losses_S): base params (LoRA merged in, or fine-tuned under
  "full") plus `delta` [2D, Q + 1] and `base_gain` [] for the Q quantiles at `levels` and the mean
  (column `model.MEAN`).

  Loss: pinball loss of the quantiles plus squared error of the mean, against `target`, by AdamW
  with the learning rate decaying on a cosine to 0, so the last steps are small and the last
  iterate does not carry one batch's noise (on frozen features, test Brier of the mean over
  learning rates 3e-3 / 1e-2 and batches 256 / 2048: 0.057-0.067 at a constant rate,
  0.057-0.058 decayed).

  `adapter`: what trains besides `delta` and `base_gain`. "head": nothing else (on features
  computed once); "lora": low-rank adapters (rank `lora_rank`, scale `lora_alpha / lora_rank`)
  on every attention and FFN kernel, merged into the returned params, and the final norm;
  "full": the whole backbone and the base head. `run` names the fit in errors.
  """
  _check_training(steps, batch_size, learning_rate)
  _check_adapter(adapter)
  levels_Q = np.asarray(levels, np.float32)
  if levels_Q.ndim != 1 or levels_Q.size == 0 or not np.all((levels_Q > 0) & (levels_Q < 1)):
    raise ValueError(f"levels must be quantile levels in (0, 1), got {tuple(levels)}")
  tokens_NxT = encode_records(records, model_cfg.max_len, tokenizer=tokenizer)
  targets_N = record_field(records, "target")
  base_params = nn.meta.unbox(base_params)
  calibrated_leaves = [name for name in CALIBRATION_LEAVES if name in base_params]
  if calibrated_leaves:
    raise ValueError(f"base_params already has calibration leaves {calibrated_leaves}; pass a "
                     "base PRM's params")
  model = PRM(model_cfg, len(levels_Q))
  # The module's own (zero) init of the calibration leaves, from one init; under jit the unused
  # backbone init is dropped.
  calibration = jax.jit(lambda: {name: leaf for name, leaf in
                                 init_params(model_cfg, len(levels_Q), 1, seed).items()
                                 if name in CALIBRATION_LEAVES})()

  def loss_fn(outputs, batch):
    quantile_logits_BxQ, mean_B = outputs
    return (metrics.pinball_loss(jax.nn.sigmoid(quantile_logits_BxQ), batch["targets"], levels_Q)
            + jnp.mean(jnp.square(mean_B - batch["targets"])))

  return _fit_adapter({**base_params, **calibration}, model, loss_fn, CALIBRATION_LEAVES,
                      adapter=adapter, lora_rank=lora_rank, lora_alpha=lora_alpha,
                      learning_rate=optax.cosine_decay_schedule(learning_rate, max(steps, 1)),
                      weight_decay=0.0, tokens_NxT=tokens_NxT,
                      labels={"targets": targets_N}, steps=steps, batch_size=batch_size,
                      seed=seed, run=run)


@functools.partial(jax.jit, static_argnames=("model_cfg", "num_quantiles"))
def _probs(params, h_Nx2D, *, model_cfg: ModelConfig, num_quantiles: int):
  return probabilities(PRM(model_cfg, num_quantiles).apply({"params": params}, h_Nx2D,
                                                           method=PRM.outputs))


def predict(params, model_cfg: ModelConfig, records: Sequence[dict], batch_size: int = 256,
            tokenizer=TOKENIZER) -> np.ndarray:
  """Success probabilities probs_NxK: K = 1 for a base PRM; for a calibrated one, a column
  per quantile level, then the mean (column `model.MEAN`). The backbone's features come from
  `readout_features` (computed once per backbone and records)."""
  params = nn.meta.unbox(params)
  num_quantiles = params["delta"]["kernel"].shape[-1] - 1 if "delta" in params else 0
  features_Nx2D = readout_features(
      params, model_cfg, encode_records(records, model_cfg.max_len, tokenizer=tokenizer),
      batch_size)
  return np.asarray(_probs(params, features_Nx2D, model_cfg=model_cfg,
                           num_quantiles=num_quantiles))
