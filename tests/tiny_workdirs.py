"""Tiny models and a finished policy + calibration run on them, for the studies' tests."""

from adaptive_jax.policy.train import train_policy
from adaptive_jax.studies.calibration_study import run_calibration_study
from configs import calibrate_small, policy_small


def tiny_model(model):
  """A model section shrunk to 1 layer of width 32 (2 heads of 16, FFN 64)."""
  model.num_layers, model.d_model, model.d_ff_big = 1, 32, 64
  model.num_heads, model.head_dim = 2, 16


def shrink_policy(config):
  """A policy_small config shrunk to 3 steps of a tiny model on difficulty 1."""
  tiny_model(config.model)
  config.task.train_difficulties = (1,)  # rows of 72 hold a whole difficulty-1 problem
  config.task.seq_len, config.task.batch_size, config.task.max_new_tokens = 72, 4, 8
  config.task.eval_problems_per_difficulty = 1
  config.train.num_steps, config.train.warmup_steps, config.train.lr_decay_steps = 3, 1, 3
  config.train.log_every = 3


def shrink_calibration(config):
  """A calibrate_small config shrunk to a few questions and steps of tiny PRMs."""
  mc = config.mc
  mc.calibration_questions, mc.test_questions = 8, 8
  mc.conformal_questions, mc.base_questions = 4, 4
  mc.num_responses, mc.num_rollouts, mc.max_steps = 1, 2, 1
  mc.max_new_tokens, mc.questions_per_shard = 16, 8
  tiny_model(config.prm.model)
  config.prm.base_steps, config.prm.calibration_steps, config.prm.batch_size = 2, 2, 4
  config.prm.step_verifier_steps = 2


def tiny_policy(policy_dir: str) -> str:
  """A finished `shrink_policy` run in `policy_dir`."""
  config = policy_small.get_config()
  shrink_policy(config)
  train_policy(config, policy_dir)
  return policy_dir


def policy_and_calibration(policy_dir: str, calibrate_dir: str) -> tuple[str, str]:
  """`tiny_policy` and a `shrink_calibration` study on it (base and calibrated PRMs, step
  verifier): (policy_dir, calibrate_dir)."""
  tiny_policy(policy_dir)
  config = calibrate_small.get_config()
  config.policy_workdir = policy_dir
  shrink_calibration(config)
  run_calibration_study(config, calibrate_dir)
  return policy_dir, calibrate_dir
