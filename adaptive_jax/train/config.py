"""Typed, validated training settings built from the experiment's ConfigDict."""

import dataclasses

from adaptive_jax import routing
from adaptive_jax.typed_config import check_int, from_mapping, is_integer


@dataclasses.dataclass(frozen=True)
class RoutingConfig:
  """Stage-1 random routing; see configs/duo_small.py for the meaning of each field."""
  p_big: float = 0.5
  p_skip: float = 0.0
  freeze_big_after: int = -1

  def __post_init__(self):
    routing.validate_probability(self.p_big, name="routing.p_big")
    routing.validate_probability(self.p_skip, name="routing.p_skip")
    if self.p_big + self.p_skip > 1.0:
      raise ValueError(f"routing.p_big + routing.p_skip must be <= 1, got {self.p_big} + "
                       f"{self.p_skip}")
    if not is_integer(self.freeze_big_after) or self.freeze_big_after < -1:
      raise ValueError(f"routing.freeze_big_after must be -1 (off) or a step >= 0, "
                       f"got {self.freeze_big_after!r}")

  from_dict = classmethod(lambda cls, values: from_mapping(cls, values, "routing"))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  seed: int = 0
  num_steps: int = 100
  learning_rate: float = 3e-3
  warmup_steps: int = 10
  lr_decay_steps: int = 100
  weight_decay: float = 0.1
  b2: float = 0.95
  grad_clip: float = 1.0
  log_every: int = 10
  checkpoint_every: int = 100
  max_checkpoints: int = 2
  mesh_shape: tuple[int, int] = (-1, 1)
  logical_axis_rules: tuple = ()

  def __post_init__(self):
    check_int("train", "num_steps", self.num_steps)
    check_int("train", "warmup_steps", self.warmup_steps, minimum=0)
    for name in ("log_every", "checkpoint_every", "max_checkpoints"):
      check_int("train", name, getattr(self, name))
    check_int("train", "lr_decay_steps", self.lr_decay_steps)
    if self.warmup_steps >= self.lr_decay_steps:
      raise ValueError(f"train.warmup_steps must be < train.lr_decay_steps, got "
                       f"{self.warmup_steps} >= {self.lr_decay_steps}")
    if not self.learning_rate > 0:
      raise ValueError(f"train.learning_rate must be > 0, got {self.learning_rate}")
    if not 0 <= self.b2 < 1:
      raise ValueError(f"train.b2 must be in [0, 1), got {self.b2}")
    if len(self.mesh_shape) != 2 or not all(
        isinstance(n, int) and (n >= 1 or n == -1) for n in self.mesh_shape):
      raise ValueError(f"train.mesh_shape must be (data, model) sizes >= 1 or -1, "
                       f"got {self.mesh_shape!r}")

  from_dict = classmethod(lambda cls, values: from_mapping(cls, values, "train"))


@dataclasses.dataclass(frozen=True)
class PerplexityEvalConfig:
  """Held-out perplexity during training, under each fixed routing policy (train/evaluate.py)."""
  num_batches: int = 8
  p_big: float = 0.5
  seed: int = 1234

  def __post_init__(self):
    check_int("eval", "num_batches", self.num_batches)
    routing.validate_probability(self.p_big, name="eval.p_big")

  from_dict = classmethod(lambda cls, values: from_mapping(cls, values, "eval"))
