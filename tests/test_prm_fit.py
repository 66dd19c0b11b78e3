"""PRM fits return the loss of every step and stop, naming the run, when a loss diverges."""

import numpy as np
import pytest

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.prm import fit

CFG = ModelConfig(vocab_size=259, num_layers=1, d_model=16, num_heads=2, head_dim=8,
                  d_ff_big=32, d_ff_small=0, max_len=16, duo=False)


def _records(n):
  """'x' in the text <-> response_correct, target 0.9 vs 0.1: a head on frozen features learns it."""
  rng = np.random.default_rng(0)
  records = []
  for i in range(n):
    has_x = i % 2 == 0
    text = "".join(rng.choice(list("abcd"), 4)) + ("x" if has_x else "") + "\n"
    records.append({"question_id": i, "text": text, "response_correct": has_x,
                    "target": 0.9 if has_x else 0.1})
  return records


def test_fits_return_the_loss_of_every_step_and_it_falls():
  records = _records(16)
  base, losses_S = fit.train_base_prm(records, CFG, steps=60, batch_size=16, learning_rate=3e-2,
                                      seed=0, adapter="head")
  assert losses_S.shape == (60,) and np.all(np.isfinite(losses_S))
  assert losses_S[-10:].mean() < 0.9 * losses_S[:10].mean()
  _, losses_S = fit.calibrate_prm(base, records, CFG, steps=3, batch_size=4, learning_rate=1e-2,
                                  seed=0)
  assert losses_S.shape == (3,)
  _, losses_S = fit.calibrate_prm(base, records, CFG, steps=0, batch_size=4, learning_rate=1e-2,
                                  seed=0)
  assert losses_S.shape == (0,)


def test_a_diverging_base_fit_raises_naming_the_run():
  # Adam's steps are about the learning rate in size: 1e30 overflows the logits at once.
  with pytest.raises(fit.DivergedError, match=r"step verifier: the loss diverged to .* at step"):
    fit.train_base_prm(_records(8), CFG, steps=5, batch_size=8, learning_rate=1e30, seed=0,
                       adapter="head", run="step verifier")


def test_a_diverging_calibration_raises_naming_the_run():
  records = _records(8)
  base, _ = fit.train_base_prm(records, CFG, steps=0, batch_size=8, learning_rate=1e-3, seed=0)
  with pytest.raises(fit.DivergedError, match=r"calibration \{'lr': 1e\+30\}: the loss diverged"):
    fit.calibrate_prm(base, records, CFG, steps=5, batch_size=8, learning_rate=1e30, seed=0,
                      run="calibration {'lr': 1e+30}")
