r"""The from-scratch policy's calibration study at the sizes of configs/calibrate_smollm2.py.

  python -m experiments.calibrate --config=configs/calibrate_small_matched.py \
      --workdir=workdir/calibrate_small_matched

The same questions (difficulties 1-4, the same seeds and counts), responses, rollouts and PRM
recipe (heads on the frozen policy: base on difficulties 1-2, calibration chosen on validation)
as the SmolLM2 run, with configs/policy_small.py's 3.6M-parameter policy as policy and backbone:
the comparison of the two backbones as verifiers (docs/pretrained.md). A few minutes on 2 cores.
"""

import ml_collections

from configs import calibrate_small, calibrate_smollm2


def get_config() -> ml_collections.ConfigDict:
  config = calibrate_small.get_config()
  smollm2 = calibrate_smollm2.get_config()
  for name in ("difficulties", "calibration_questions", "test_questions", "conformal_questions",
               "base_questions", "validation_questions", "num_responses", "num_rollouts",
               "max_steps"):
    config.mc[name] = smollm2.mc[name]
  for name in ("base_max_difficulty", "base_adapter", "adapter", "step_verifier_steps",
               "step_verifier_adapter"):
    config.prm[name] = smollm2.prm[name]
  return config
