"""Tiny models and a finished policy + calibration run on them, for the studies' tests."""

from adaptive_jax.policy.train import train_policy
from adaptive_jax.studies.calibration_study import run_calibration_study
from configs import calibrate_small, policy_small


def tiny_model(model):
  """A model section shrunk to 1 layer of width 32 (2 heads of 16, FFN 64)."""
  model.num_layers, model.d_model, model.d_ff_big = 1, 32, 64
  model.num_heads, model.head_dim = 2, 16


def policy_and_calibration(policy_dir: str, calibrate_dir: str) -> tuple[str, str]:
  """A 3-step policy on difficulty 1 and a calibration study (base and calibrated PRMs, step
  verifier) of a few questions on it: (policy_dir, calibrate_dir)."""
  config = policy_small.get_config()
  tiny_model(config.model)
  config.task.train_difficulties = (1,)  # rows of 72 hold a whole difficulty-1 problem
  config.task.seq_len, config.task.batch_size, config.task.max_new_tokens = 72, 4, 8
  config.task.eval_problems_per_difficulty = 1
  config.train.num_steps, config.train.warmup_steps, config.train.lr_decay_steps = 3, 1, 3
  config.train.log_every = 3
  train_policy(config, policy_dir)
  config = calibrate_small.get_config()
  config.policy_workdir = policy_dir
  config.mc.calibration_questions, config.mc.test_questions = 8, 8
  config.mc.conformal_questions, config.mc.base_questions = 4, 4
  config.mc.num_responses, config.mc.num_rollouts, config.mc.max_steps = 1, 2, 1
  config.mc.max_new_tokens, config.mc.questions_per_shard = 16, 8
  tiny_model(config.prm.model)
  config.prm.base_steps, config.prm.calibration_steps, config.prm.batch_size = 2, 2, 4
  config.prm.step_verifier_steps = 2
  run_calibration_study(config, calibrate_dir)
  return policy_dir, calibrate_dir
