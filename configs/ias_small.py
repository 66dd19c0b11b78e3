r"""Instance-adaptive sampling on CPU: a regime with headroom, pools, every method, ratios.

  python -m experiments.train_policy --config=configs/policy_small.py --workdir=workdir/policy_small
  python -m experiments.calibrate --config=configs/calibrate_small.py --workdir=workdir/calibrate_ias \
    --config.mc.calibration_questions=512 --config.mc.test_questions=64 \
    --config.mc.conformal_questions=32 --config.mc.validation_questions=64
  python -m experiments.ias --config=configs/ias_small.py --workdir=workdir/ias_small
  python -m benchmarks.ias --pools=workdir/ias_small/pools
  python -m experiments.ias_figures --workdir=workdir/ias_small --out_dir=docs/figures

First a design split (64 questions cycling over difficulties 1-8, 64 samples each at
temperatures 0.7 and 1.0) chooses the regime - the difficulty mix, temperature and N_max -
from fixed-N statistics alone, by the rule and the criteria of the `regime` section, fixed
before any run. Then 256 validation and 512 test questions of the regime, and 64 control
questions of the uniform 1-8 mix (the declared negative control), draw 32 samples each,
scored by the base and calibrated PRMs, the learned step verifier and the rule verifier.
Sized for 2 CPU cores (about an hour of sampling, 35k samples): the test and validation
splits get the questions, since the ratios' intervals are over questions, and 32 samples each;
on an accelerator raise n_max, fixed_ns, ias_n_maxes and regime.n_max_choices to 64 and the
design and control splits to 256 and 512.
Fixed N is averaged over 100 random orders; IAS is swept over q x N_max x estimate, budget-
aware allocation (offline greedy and online in the loop) over the budget; the aggregation and
each family's setting are chosen on validation (the cheapest reaching fixed N = N_max's
accuracy), test is read once, ratios get paired bootstrap 90% intervals. results.json; the
compact pools in pools/ (commit them under docs/results/ to let anyone recompute).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.policy_workdir = "workdir/policy_small"  # a finished train_policy run
  config.policy_config = "configs/policy_small.py"  # named in the error when it is missing
  config.calibrate_workdir = "workdir/calibrate_ias"  # a finished calibration study (its PRMs)
  config.calibrate_config = "configs/calibrate_small.py"

  config.ias = ml_collections.ConfigDict()
  config.ias.design_questions = 64  # the regime is chosen on these (difficulties cycle)
  config.ias.validation_questions = 256  # every choice is made here
  config.ias.test_questions = 512  # read once
  config.ias.control_questions = 64  # the uniform mix's test questions (0: no control)
  # Question seeds, each split its own, apart from the calibration study's 10-14.
  config.ias.design_seed = 22
  config.ias.validation_seed = 20
  config.ias.test_seed = 21
  config.ias.control_seed = 23
  config.ias.design_difficulties = (1, 2, 3, 4, 5, 6, 7, 8)  # mixes are ranges of these
  config.ias.temperatures = (0.7, 1.0)  # the regime's candidates
  config.ias.n_max = 32  # samples per question in the validation, test and control pools
  # Per design question and temperature: the hopeless criterion counts questions with none
  # correct among these 64 (0: n_max).
  config.ias.design_samples = 64
  config.ias.fixed_ns = (1, 2, 4, 8, 16, 32)  # the fixed-budget curve
  config.ias.orders = 100  # random pool orders the fixed curve averages over
  config.ias.qs = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)  # IAS confidence (paper: 0.99)
  config.ias.ias_n_maxes = (16, 32)  # IAS caps (paper: 64)
  config.ias.ias_estimates = ("calibrated_q0.1", "calibrated_mean", "combined")  # paper: q0.1
  config.ias.budgets = (1.0, 2.0, 4.0, 8.0, 16.0)  # budget-aware: samples per question, mean
  config.ias.online_solved_at = (0.5, 0.8)  # online: a verifier score that retires a question
  config.ias.online_hopeless_below = 0.02  # online: a posterior mean that retires it
  config.ias.online_prior_strength = 2.0  # online: the prior estimate's weight, in samples
  config.ias.online_estimate = "combined"  # online: the prior estimate
  # online: the selector's score mapped to P(correct) by an isotonic fit on validation samples
  # (the policy's likelihood is no probability of being right; a learned verifier's need not be)
  config.ias.online_calibrated = True
  # online: caps on one question's samples (as IAS's n_max), swept with the budget; 32: none
  config.ias.online_n_maxes = (4, 8, 16, 32)
  config.ias.q = 0.99  # probe IAS's confidence (paper)
  config.ias.per_round = 4  # samples a question draws per round of the adaptive loop
  config.ias.rows = 256  # rows per round (static)
  config.ias.pool_rows = 256  # rows per decode call while drawing the pool
  config.ias.max_new_tokens = 224
  config.ias.confidence_top_k = 20  # DeepConf's token confidence over the top 20 (as its code)
  config.ias.group_window = 16  # DeepConf's sliding window, in tokens (solutions ~40-180)
  config.ias.deepconf_warmup = 4  # warm-up traces that set the early-stop threshold
  config.ias.deepconf_tau = 0.95  # consensus of the confidence-weighted vote (paper)
  config.ias.consistency_threshold = 0.95  # Adaptive-Consistency's Beta criterion (its default)
  config.ias.bootstrap_resamples = 2000
  config.ias.seed = 0

  # What the regime must show on the design split, fixed before any run (studies/regime.py).
  config.regime = ml_collections.ConfigDict()
  config.regime.pass1_range = (0.3, 0.6)  # mean pass@1 of the mix
  config.regime.min_headroom = 0.25  # pass@N_max - pass@1: what a perfect selector gains
  config.regime.max_hopeless = 0.10  # share of questions with no correct sample in the pool
  config.regime.n_max_choices = (16, 32)
  config.regime.min_difficulties = 2  # a mix spans at least this many difficulties

  # Step-level beam search on the first test questions (beams ranked by the calibrated PRM's
  # median, widths from its 0.1 quantile). Paper: K x M = 64 generations per step, M_max = 8.
  config.beam = ml_collections.ConfigDict()
  config.beam.questions = 32
  config.beam.fixed = ((1, 4), (2, 4), (4, 4))  # (K beams, M expansions) of the fixed searches
  config.beam.num_beams = 4  # K at most (IAS-of-K and IAS-of-M)
  config.beam.expansions = 4  # M at most
  config.beam.max_steps = 10  # difficulty 8 needs 8 steps and the answer line
  config.beam.max_step_tokens = 48  # one solution line is ~20 tokens
  config.beam.max_rows = 512  # rows per decode call
  return config
