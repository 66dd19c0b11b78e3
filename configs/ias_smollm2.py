r"""Instance-adaptive sampling with SmolLM2-135M-Instruct as policy and PRM backbone.

  python -m experiments.calibrate --config=configs/calibrate_smollm2.py \
      --workdir=workdir/calibrate_smollm2
  python -m experiments.ias --config=configs/ias_smollm2.py --workdir=workdir/ias_smollm2

The study of configs/ias_small.py on the fine-tuned SmolLM2 (its adapters and PRMs are read
from the calibration study's workdir), with its regime chosen by the same rule on its own design split of difficulties 1-4, at a size
for 2 CPU cores: 16 samples for each of 32 design, 32 validation and 48 test questions, no
separate control (the design difficulties are its mix), beam search on 16 test questions.
"""

import ml_collections

from configs import calibrate_smollm2, ias_small


def get_config() -> ml_collections.ConfigDict:
  config = calibrate_smollm2.read_policy_from_this_run(ias_small.get_config())
  calibrate = calibrate_smollm2.get_config()

  config.ias.design_difficulties = tuple(calibrate.mc.difficulties)
  config.ias.design_questions = 32
  config.ias.validation_questions = 32
  config.ias.test_questions = 48
  config.ias.control_questions = 0  # the design difficulties are already the control's mix
  config.ias.temperatures = (0.7,)
  config.ias.n_max = 16
  config.ias.fixed_ns = (1, 2, 4, 8, 16)
  config.ias.ias_n_maxes = (8, 16)
  config.ias.online_n_maxes = (4, 8, 16)
  config.ias.budgets = (1.0, 2.0, 4.0, 8.0)
  config.ias.orders = 20
  config.ias.rows = 128
  config.ias.pool_rows = 256
  config.ias.max_new_tokens = calibrate.mc.max_new_tokens
  config.regime.n_max_choices = (8, 16)

  config.beam.questions = 16
  config.beam.max_steps = 5  # difficulty 4: 4 steps and the answer line
  config.beam.max_step_tokens = 32  # one line is at most ~20 BPE tokens
  return config
