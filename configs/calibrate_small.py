r"""Calibrated PRM on CPU: Monte-Carlo labels from the policy, a base PRM, calibration methods.

  python -m experiments.train_policy --config=configs/policy_small.py --workdir=workdir/policy_small
  python -m experiments.calibrate --config=configs/calibrate_small.py --workdir=workdir/calibrate_small

Generates MC labels (responses, step prefixes, rollouts) for five disjoint sets of questions:
base, calibration, conformal, validation, test. Trains a base PRM the way public PRMs are trained
(final-outcome labels of other, easier questions: the base set, difficulty <= 3), then
calibrates it on the calibration questions: quantile outputs fine-tuned with the pinball loss
and a mean output with the squared error (head only here; LoRA adapters or the full backbone
with `--config.prm.adapter`), and the baselines temperature scaling, isotonic regression and
histogram binning; the conformal questions then correct the 0.1 quantile (split conformal).
The calibration's learning rate and batch size (`select`) and the point estimate (the method
with the lowest Brier) are chosen on the validation questions; the test questions are read
once, last.

Records of one question are strongly correlated, so the number of distinct questions is what
limits generalization: with 48 calibration questions x 4 responses the fine-tune overfits
(train Brier 0.03, test 0.12), hence 1536 questions x 2 responses here (768: test Brier 0.053,
1536: 0.050), and 256 test questions, so that the calibrated / base ratio is known to about
+-0.06 (90% bootstrap interval over questions; with 64 it was +-0.10). results.json holds
Brier and ECE on the test questions for every method and each one's ratio to the base PRM
(paper: Brier 0.24 -> 0.07; target here: calibrated <= 0.3x base). About 95 minutes on 2
CPU cores, 80 of them sampling.
"""

import ml_collections

from configs import policy_small


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.policy_workdir = "workdir/policy_small"  # a finished train_policy run
  config.policy_config = "configs/policy_small.py"  # named in the error when it is missing

  config.mc = ml_collections.ConfigDict()
  config.mc.calibration_questions = 1536  # fit split (difficulties cycle 1..8)
  config.mc.test_questions = 256  # held-out split
  config.mc.conformal_questions = 64  # held out from the fine-tune, for split conformal
  config.mc.base_questions = 96  # the base PRM's own (easy) questions: outcome labels only
  config.mc.validation_questions = 128  # every calibration choice is made on these
  config.mc.calibration_seed = 10  # each split draws its questions from its own seed
  config.mc.test_seed = 11
  config.mc.conformal_seed = 12
  config.mc.base_seed = 13
  config.mc.validation_seed = 14
  config.mc.num_responses = 2  # paper: 8; more questions beat more responses here
  config.mc.num_rollouts = 4  # paper: 8
  config.mc.max_steps = 6  # prefixes at steps 0..max_steps (paper: 20)
  config.mc.temperature = 0.7  # as in the paper
  config.mc.max_new_tokens = 224
  config.mc.questions_per_shard = 16
  config.mc.seed = 0
  config.mc.difficulties = (1, 2, 3, 4, 5, 6, 7, 8)  # the questions' difficulties, cycling

  config.prm = ml_collections.ConfigDict()
  config.prm.model = policy_small.get_config().model  # same shape as the policy
  # What the backbone starts from: "policy" (its weights), "random", or the workdir of another
  # finished train_policy run (prm.model must then be that run's model, e.g. a stronger LM).
  config.prm.backbone = "policy"
  config.prm.base_max_difficulty = 3  # the base PRM sees only easier questions' outcomes
  config.prm.base_adapter = "full"  # as public PRMs: the whole backbone ('lora', 'head' too)
  config.prm.base_steps = 300  # AdamW steps on the base set, binary cross-entropy
  config.prm.calibration_steps = 2000  # fine-tune steps on the calibration set
  # The rate and batch used when `select` below is empty; with it, validation chooses (here
  # 1e-2 and 32, with the rate decayed on a cosine; docs/calibrated_prm.md).
  config.prm.calibration_learning_rate = 3e-3
  config.prm.calibration_batch_size = 256
  # What the fine-tune trains besides the calibration head: 'head' (nothing: it fits on
  # features computed once; test Brier 0.050), 'lora' (rank-r adapters on every attention and
  # FFN kernel, and the final norm, as the paper: 0.047 and 0.056 over two calibration seeds
  # with calibration_steps=600, calibration_batch_size=32, calibration_learning_rate=2e-3,
  # ~30 min on 2 cores) or 'full' (on 768 questions and 64 test questions: 0.055-0.062
  # against the head's 0.057-0.062).
  config.prm.adapter = "head"
  config.prm.lora_rank = 8
  config.prm.lora_alpha = 16.0  # adapter scale alpha / rank
  config.prm.batch_size = 32  # the base PRM's
  config.prm.learning_rate = 1e-3  # the base PRM's
  config.prm.levels = (0.1, 0.5, 0.9)  # quantile levels of the calibrated head
  config.prm.seed = 0  # the base PRM's init and batches
  config.prm.calibration_seed = 0  # the calibration's: vary it with the base PRM fixed
  # The step verifier (prm/step_verifier.py): the base PRM's recipe (batch, rate, backbone,
  # seed) on exact per-step labels of the calibration split's solutions; test AUCs of it, the
  # base and the calibrated PRM in results.json["step_verifier"]. 0 steps: none.
  config.prm.step_verifier_steps = 600  # AdamW steps, binary cross-entropy on the step labels
  config.prm.step_verifier_adapter = "full"  # what trains besides the head, as base_adapter
  # "prefixes": a row per solution prefix; "solutions": a row per solution with a label at each
  # line end (the same labels, ~7.5x fewer rows on this task: 6593 solutions, 49227 lines).
  config.prm.step_verifier_examples = "prefixes"

  # Calibration settings fit side by side; the lowest validation Brier of the calibrated mean
  # is kept (empty: prm's own value). Under 'head' each fit takes seconds.
  config.select = ml_collections.ConfigDict()
  config.select.learning_rates = (1e-3, 3e-3, 1e-2)
  config.select.batch_sizes = (32, 256)

  config.eval = ml_collections.ConfigDict()
  config.eval.num_bins = 10  # ECE and reliability diagrams
  config.eval.conformal_alpha = 0.1  # one-sided: P(target >= corrected q0.1) >= 0.9
  config.eval.histogram_bins = 10
  return config
