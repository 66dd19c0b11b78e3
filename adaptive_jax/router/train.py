"""Router training on a frozen Duo model: the paper's loss and imitation of an oracle's routes.

Paper router: soft routing at temperature tau (annealed exponentially from temperature_start
to temperature_end), loss = CE + alpha * budget_loss, budget_loss = (mean P_big - k / L)^2.
Worked example, L=4, k=1, two tokens with P_big per layer (.5, .5, 0, 0) and (0, 0, 0, 0):
mean P_big = 1/8, target 1/4, budget_loss = (1/8 - 1/4)^2 = 1/64.

Imitation router: cross-entropy of each layer's router logits against the oracle's route at
that token and layer, on the FFN inputs of the oracle's own path (teacher forcing: computed
once, since the Duo model is frozen; training is then logistic regression per layer).

Only the router params are trained; the Duo params enter each jitted step as an argument,
never differentiated. Batches are drawn on device from a pool of sequences with
fold_in(key, step), so a run is a pure function of its key.
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adaptive_jax import routing
from adaptive_jax.nn import router as router_lib
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.perplexity import perplexity
from adaptive_jax.train.step import cross_entropy
from adaptive_jax.typed_config import check_int, check_open_interval, from_mapping


@dataclasses.dataclass(frozen=True)
class RouterConfig:
  """See configs/router_small.py for the meaning of each field."""
  budgets: tuple[int, ...] = (2, 4, 6, 8)
  alpha: float = 100.0
  temperature_start: float = 1.0
  temperature_end: float = 0.05
  with_skip: bool = False
  num_steps: int = 300
  batch_size: int = 16
  learning_rate: float = 1e-2
  weight_decay: float = 0.0
  seed: int = 0
  train_sequences: int = 64
  seq_len: int = 128
  oracle_sequences: int = 8
  oracle_seq_len: int = 64
  eval_domains: tuple[str, ...] = ("shakespeare", "python_stdlib")
  eval_sequences: int = 8
  schedules: tuple[tuple[int, ...], ...] = ()

  def __post_init__(self):
    for name in ("num_steps", "batch_size", "train_sequences", "seq_len", "oracle_sequences",
                 "oracle_seq_len", "eval_sequences"):
      check_int("router", name, getattr(self, name))
    check_int("router", "seed", self.seed, minimum=0)
    check_open_interval("router", "alpha", self.alpha, 0.0)
    check_open_interval("router", "learning_rate", self.learning_rate, 0.0)
    if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
      raise ValueError(f"router.weight_decay must be a number >= 0, got {self.weight_decay!r}")
    check_open_interval("router", "temperature_start", self.temperature_start, 0.0)
    check_open_interval("router", "temperature_end", self.temperature_end, 0.0)
    if self.temperature_end > self.temperature_start:
      raise ValueError(f"router.temperature_end ({self.temperature_end}) must be <= "
                       f"router.temperature_start ({self.temperature_start}): it anneals "
                       f"toward hard routing")
    if not isinstance(self.with_skip, bool):
      raise ValueError(f"router.with_skip must be a bool, got {self.with_skip!r}")
    if isinstance(self.budgets, (int, np.integer)) or not len(self.budgets):
      raise ValueError(f"router.budgets must be a non-empty tuple of integers, "
                       f"got {self.budgets!r}")
    if self.oracle_sequences > self.train_sequences or self.oracle_seq_len > self.seq_len:
      raise ValueError(f"router.oracle_sequences x router.oracle_seq_len "
                       f"({self.oracle_sequences} x {self.oracle_seq_len}) must fit in "
                       f"router.train_sequences x router.seq_len "
                       f"({self.train_sequences} x {self.seq_len})")
    object.__setattr__(self, "budgets", tuple(self.budgets))
    object.__setattr__(self, "eval_domains", tuple(self.eval_domains))
    object.__setattr__(self, "schedules", tuple(tuple(s) for s in self.schedules))
    for schedule in self.schedules:
      if not schedule or self.seq_len % len(schedule):
        raise ValueError(f"router.schedules entry {schedule} must hold S >= 1 budgets with S "
                         f"dividing router.seq_len ({self.seq_len})")
      mean = sum(schedule) / len(schedule)
      if mean not in self.budgets:
        raise ValueError(f"router.schedules entry {schedule} has mean budget {mean:g}, which "
                         f"must be one of router.budgets {self.budgets}: each schedule is "
                         f"compared with the constant budget of the same mean")

  def validate_for(self, num_layers: int, max_len: int) -> None:
    """Budgets within [0, L] and sequences no longer than the model's context."""
    for k in self.budgets:
      routing.validate_budget(k, num_layers=num_layers, name="router.budgets entry")
    for schedule in self.schedules:
      for k in schedule:
        routing.validate_budget(k, num_layers=num_layers, name="router.schedules entry")
    if self.seq_len > max_len:
      raise ValueError(f"router.seq_len ({self.seq_len}) must be <= model.max_len ({max_len})")

  from_dict = classmethod(lambda cls, values: from_mapping(cls, values, "router"))


def budget_loss(p_big_BxTxL, budget, num_layers: int) -> jax.Array:
  """(mean P_big - budget / L)^2: zero exactly when the mean big probability is budget / L.

  A schedule budget_S (S budgets for S equal segments along T, paper Fig. 4c) gives the mean
  over segments of each segment's term; one segment is the paper's loss.
  """
  budget_S = jnp.atleast_1d(jnp.asarray(budget, jnp.float32))
  B, T, L = p_big_BxTxL.shape
  p_big_S = jnp.mean(p_big_BxTxL.reshape(B, budget_S.shape[0], -1, L), axis=(0, 2, 3))
  return jnp.mean(jnp.square(p_big_S - budget_S / num_layers))


def schedule_positions(schedule_S, seq_len: int) -> np.ndarray:
  """Per-position budgets of a schedule of S equal segments: (8, 4), T=4 -> [8, 8, 4, 4]."""
  schedule_S = np.asarray(schedule_S, np.int32)
  if schedule_S.ndim != 1 or not len(schedule_S) or seq_len % len(schedule_S):
    raise ValueError(f"a budget schedule needs S >= 1 budgets with S dividing the sequence "
                     f"length {seq_len}, got {tuple(schedule_S.tolist())}")
  return np.repeat(schedule_S, seq_len // len(schedule_S))


def paper_loss(logits_BxTxV, targets_BxT, p_big_BxTxL, *, budget, num_layers: int, alpha):
  """CE + alpha * budget_loss; returns (loss, (ce, budget_loss))."""
  ce = jnp.mean(cross_entropy(logits_BxTxV, targets_BxT))
  bl = budget_loss(p_big_BxTxL, budget, num_layers)
  return ce + alpha * bl, (ce, bl)


def imitation_loss(router_logits_BxTxLxR, route_BxTxL) -> jax.Array:
  """Mean cross-entropy of each token's and layer's router logits against the route taken."""
  with_skip = router_logits_BxTxLxR.shape[-1] == routing.NUM_ROUTES
  labels_BxTxL = router_lib.option_index(route_BxTxL, with_skip)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(router_logits_BxTxLxR,
                                                                  labels_BxTxL))


def temperature_at(cfg: RouterConfig, step) -> jax.Array:
  """Exponential annealing: temperature_start at step 0, temperature_end at the last step."""
  frac = jnp.minimum(step / max(cfg.num_steps - 1, 1), 1.0)
  return cfg.temperature_start * (cfg.temperature_end / cfg.temperature_start) ** frac


class RouterState(NamedTuple):
  step: jax.Array
  params: dict
  opt_state: optax.OptState


def _optimizer(cfg: RouterConfig) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay))


def _init_state(cfg: RouterConfig, router_params) -> RouterState:
  return RouterState(jnp.zeros((), jnp.int32), router_params,
                     _optimizer(cfg).init(router_params))


def _apply(cfg: RouterConfig, state: RouterState, grads) -> RouterState:
  updates, opt_state = _optimizer(cfg).update(grads, state.opt_state, state.params)
  return RouterState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)


def _draw(cfg: RouterConfig, key, step, pool):
  """A batch of `batch_size` rows of every pool array, drawn with replacement."""
  num = jax.tree.leaves(pool)[0].shape[0]
  rows_B = jax.random.randint(jax.random.fold_in(key, step), (cfg.batch_size,), 0, num)
  return jax.tree.map(lambda a: a[rows_B], pool)


@functools.partial(jax.jit, static_argnames=("model_cfg", "cfg"), donate_argnums=0)
def paper_step(state: RouterState, duo_params, pool, key, budget, *, model_cfg: ModelConfig,
               cfg: RouterConfig):
  """One AdamW step of the paper's loss on a batch of pool {'inputs', 'targets'}."""
  batch = _draw(cfg, key, state.step, pool)
  temperature = temperature_at(cfg, state.step)

  def loss_fn(router_params):
    out = router_lib.soft_routed(duo_params, router_params, model_cfg, batch["inputs"],
                                 temperature=temperature)
    p_big_BxTxL = router_lib.big_probability(out.weights_BxTxLxR)
    loss, (ce, bl) = paper_loss(out.logits_BxTxV, batch["targets"], p_big_BxTxL, budget=budget,
                                num_layers=model_cfg.num_layers, alpha=cfg.alpha)
    return loss, {"router/ce": ce, "router/budget_loss": bl,
                  "router/big_layers": jnp.mean(p_big_BxTxL) * model_cfg.num_layers}

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return _apply(cfg, state, grads), {"router/loss": loss, "router/temperature": temperature,
                                     **metrics}


@functools.partial(jax.jit, static_argnames="cfg", donate_argnums=0)
def imitation_step(state: RouterState, pool, key, *, cfg: RouterConfig):
  """One AdamW step of the imitation loss on pool {'ffn_inputs_BxTxLxD', 'route_BxTxL'}."""
  batch = _draw(cfg, key, state.step, pool)

  def loss_fn(router_params):
    logits_BxTxLxR = router_lib.all_layer_logits(router_params, batch["ffn_inputs_BxTxLxD"])
    agree = jnp.mean(router_lib.option_index(batch["route_BxTxL"], cfg.with_skip)
                     == jnp.argmax(logits_BxTxLxR, -1))
    return imitation_loss(logits_BxTxLxR, batch["route_BxTxL"]), agree

  (loss, agree), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return _apply(cfg, state, grads), {"router/loss": loss, "router/agreement": agree}


def _fit(step_fn, state: RouterState, num_steps: int):
  history = [None] * num_steps
  for s in range(num_steps):
    state, history[s] = step_fn(state)
  return state.params, {k: np.array([float(h[k]) for h in history]) for k in history[0]}


def train_paper_router(duo_params, model_cfg: ModelConfig, cfg: RouterConfig, tokens_NxT,
                       targets_NxT, *, budget, key: jax.Array):
  """Router params trained with the paper's loss for `budget` big layers, and per-step metrics.

  budget: one integer, or a schedule (S budgets for S equal segments along the sequence).
  tokens_NxT, targets_NxT: the pool of training sequences batches are drawn from.
  """
  schedule_S = np.atleast_1d(np.asarray(budget))
  for k in schedule_S:
    routing.validate_budget(k, num_layers=model_cfg.num_layers)
  schedule_positions(schedule_S, np.shape(tokens_NxT)[1])  # S must divide T
  init_key, data_key = jax.random.split(key)
  state = _init_state(cfg, router_lib.init_router(init_key, model_cfg.d_model,
                                                  model_cfg.num_layers, with_skip=cfg.with_skip))
  pool = {"inputs": jnp.asarray(tokens_NxT), "targets": jnp.asarray(targets_NxT)}
  budget = jnp.asarray(schedule_S, jnp.float32)
  return _fit(lambda st: paper_step(st, duo_params, pool, data_key, budget, model_cfg=model_cfg,
                                    cfg=cfg), state, cfg.num_steps)


def train_imitation_router(duo_params, model_cfg: ModelConfig, cfg: RouterConfig, tokens_NxT,
                           route_NxTxL, *, key: jax.Array):
  """Router params trained to predict `route_NxTxL` (an oracle's) on its own path's states."""
  if cfg.with_skip:
    raise ValueError("the imitation router chooses SMALL or BIG (the oracles' routes): "
                     "router.with_skip must be False")
  init_key, data_key = jax.random.split(key)
  params = router_lib.init_router(init_key, model_cfg.d_model, model_cfg.num_layers)
  forced = jax.jit(router_lib.teacher_forced, static_argnames="cfg")(
      duo_params, params, model_cfg, jnp.asarray(tokens_NxT), jnp.asarray(route_NxTxL))
  pool = {"ffn_inputs_BxTxLxD": forced.ffn_inputs_BxTxLxD, "route_BxTxL": jnp.asarray(route_NxTxL)}
  return _fit(lambda st: imitation_step(st, pool, data_key, cfg=cfg), _init_state(cfg, params),
              cfg.num_steps)


@functools.partial(jax.jit, static_argnames=("cfg", "budget"))
def _hard_eval(duo_params, router_params, tokens_BxT, targets_BxT, *, cfg, budget):
  out = router_lib.hard_routed(duo_params, router_params, cfg, tokens_BxT, budget=budget)
  return cross_entropy(out.logits_BxTxV, targets_BxT), out.route_BxTxL


def hard_eval(duo_params, router_params, model_cfg: ModelConfig, tokens_BxT, targets_BxT, *,
              budget=None) -> tuple[np.ndarray, np.ndarray]:
  """Per-token loss [B, T] and routes [B, T, L] under hard routing: the top route, or exactly
  `budget` BIG layers per token (one integer, or one per position)."""
  if budget is not None and np.ndim(budget):
    budget = tuple(int(k) for k in np.asarray(budget))
  loss_BxT, route_BxTxL = _hard_eval(duo_params, router_params, jnp.asarray(tokens_BxT),
                                     jnp.asarray(targets_BxT), cfg=model_cfg, budget=budget)
  return np.asarray(loss_BxT), np.asarray(route_BxTxL)


def summarize(loss_BxT, route_BxTxL) -> dict:
  """Perplexity and the budget realized: mean BIG layers per token, overall, per layer and
  per position, and mean SKIP layers per token."""
  big_BxTxL = np.asarray(route_BxTxL) == routing.Route.BIG
  return {"ppl": perplexity(loss_BxT),
          "big_layers": float(big_BxTxL.sum(-1).mean()),
          "big_by_layer": big_BxTxL.mean((0, 1)).tolist(),
          "big_by_position": big_BxTxL.sum(-1).mean(0).tolist(),
          "skip_layers": float((np.asarray(route_BxTxL) == routing.Route.SKIP).sum(-1).mean())}


def evaluate_router(duo_params, router_params, model_cfg: ModelConfig, tokens_BxT, targets_BxT,
                    *, budget=None) -> dict:
  """`summarize` of `hard_eval`: held-out perplexity and the budget realized."""
  return summarize(*hard_eval(duo_params, router_params, model_cfg, tokens_BxT, targets_BxT,
                              budget=budget))
