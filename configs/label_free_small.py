r"""The label-free loop (TAO-style) on CPU: unlabelled questions, pseudo-labels, a better policy?

  python -m experiments.train_policy --config=configs/policy_small.py --workdir=workdir/policy_small
  python -m experiments.calibrate --config=configs/calibrate_small.py --workdir=workdir/calibrate_small
  python -m experiments.label_free --config=configs/label_free_small.py --workdir=workdir/label_free
  python -m benchmarks.label_free --results=workdir/label_free/results.json
  python -m experiments.label_free_figures --workdir=workdir/label_free --out_dir=docs/figures

Three rounds; each round 128 fresh unlabelled prompts of difficulties 2-4 (the policy's
range with headroom: pass@1 well below pass@64 in the policy's own evaluation, where
difficulty 1 is solved and 5-8 rarely are), 8 samples each at temperature 0.7 for every
label-free arm, scored by the drawing policy's own likelihood of each sample. Each arm then
takes 16 AdamW steps of 16 rows (full fine-tuning; about two passes over the fine-tuning arms'
one example per prompt, a quarter of GRPO's up to 1024 rows), at the learning rate it chose in
round 1 on validation. After each round: 64
validation and 128 test questions, greedy and 8 samples each. The arms, their settings and
the number of rounds are fixed here before the run; the best label-free arm is chosen on
validation.
"""

import ml_collections

from adaptive_jax.studies.label_free_study import ARMS


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.policy_workdir = "workdir/policy_small"  # a finished train_policy run
  config.policy_config = "configs/policy_small.py"  # named in the error when it is missing
  config.calibrate_workdir = "workdir/calibrate_small"  # a finished calibration study
  config.calibrate_config = "configs/calibrate_small.py"

  lf = config.label_free = ml_collections.ConfigDict()
  lf.rounds = 3
  lf.prompts_per_round = 128  # fresh unlabelled prompts each round, the same for every arm
  lf.validation_questions = 64  # every choice is made here
  lf.test_questions = 128  # read after each round; the headline reads the last
  # Question seeds, each split its own, apart from the calibration (10-14) and IAS (20-23) ones.
  lf.loop_seed = 30
  lf.validation_seed = 31
  lf.test_seed = 33
  lf.difficulties = (2, 3, 4)
  # supervised (labelled reference), majority, best_of_n, budget_best_of_n, grpo, and
  # rule_best_of_n (the exact step checker selects: a ceiling, not label-free)
  lf.arms = ARMS
  # The drawing policy's own likelihood of each sample (geometric-mean token probability):
  # within-difficulty AUC of right vs wrong answers 0.81 on ias_small's validation pool, where
  # the learned step verifier scores 0.51 ("verifier") and the calibrated PRM 0.54
  # ("calibrated").
  lf.reward = "likelihood"
  lf.temperature = 0.7
  lf.max_new_tokens = 128  # difficulty 4 solutions are ~90 bytes
  lf.samples_per_prompt = 8  # N: every label-free arm draws 128 x 8 samples a round
  lf.budget_n_max = 16  # budget_best_of_n: the same total, at most 16 to a prompt
  lf.min_score = 0.0  # best-of-N arms train on every prompt's best sample
  lf.steps = 16  # optimizer steps per round, every arm
  lf.batch_size = 16
  # Each arm tries these in round 1 and keeps the one of best validation pass@1 (the policy
  # trained at 3e-3 peak, 3e-4 at the end of its cosine).
  lf.learning_rates = (1e-4, 3e-4)  # fine-tuning arms (supervised included)
  lf.grpo_learning_rates = (3e-5, 1e-4)
  lf.grpo_clip = 0.2
  lf.grpo_kl = 0.04
  lf.lora_rank = 0  # full fine-tuning (label_free_smollm2.py: LoRA adapters)
  lf.lora_alpha = 32.0
  lf.eval_samples = 8  # per evaluation question: pass@1, pass@8, distinct answers, Brier
  lf.best_of_n_orders = 20  # random orders of the start policy's best-of-n curve
  lf.rows = 256  # rows per decode call
  lf.bootstrap_resamples = 2000
  lf.seed = 0
  return config
