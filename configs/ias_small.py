r"""Instance-adaptive sampling on CPU: every best-of-N method through the on-device loop.

  python -m experiments.train_policy --config=configs/policy_small.py --workdir=workdir/policy_small
  python -m experiments.calibrate --config=configs/calibrate_small.py --workdir=workdir/calibrate_ias \
    --config.mc.calibration_questions=512 --config.mc.test_questions=64 \
    --config.mc.conformal_questions=32 --config.mc.validation_questions=64
  python -m experiments.ias --config=configs/ias_small.py --workdir=workdir/ias_small
  python -m experiments.ias_figures --workdir=workdir/ias_small --out_dir=docs/figures

Draws 32 samples for each of 64 validation and 128 test questions (difficulties cycling 1..8)
once, then runs fixed N = 1..32, IAS best-of-N (N(p) from the base PRM, the calibrated PRM's
0.1 quantile and mean, the combined estimate, and the per-difficulty success rate as an
oracle), probe IAS (N(p) from the first sample's confidence, alone or with its PRM score and
the combined estimate; fit on the validation pool), Adaptive-Consistency and DeepConf-online
(low and high) through the adaptive loop on replays of those samples. The aggregation of the
PRM methods is chosen on validation. results.json: per method accuracy [90% interval], samples, tokens and FLOPs per question, by
difficulty, and FLOPs / fixed FLOPs at matched accuracy. About 20 minutes on 2 cores.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.policy_workdir = "workdir/policy_small"  # a finished train_policy run
  config.policy_config = "configs/policy_small.py"  # named in the error when it is missing
  config.calibrate_workdir = "workdir/calibrate_ias"  # a finished calibration study (its PRMs)
  config.calibrate_config = "configs/calibrate_small.py"

  config.ias = ml_collections.ConfigDict()
  config.ias.validation_questions = 64  # choices are made here
  config.ias.test_questions = 128  # read once
  config.ias.validation_seed = 20  # question seeds, apart from the calibration study's 10-13
  config.ias.test_seed = 21
  config.ias.n_max = 32  # samples per question at most (paper's best-of-N sweep: up to 64)
  config.ias.fixed_ns = (1, 2, 4, 8, 16, 32)  # the fixed-budget sweep
  config.ias.q = 0.99  # IAS confidence of at least one success (paper)
  config.ias.per_round = 4  # samples a question draws per round of the adaptive loop
  config.ias.rows = 256  # rows per round (static)
  config.ias.pool_rows = 256  # rows per decode call while drawing the pool
  config.ias.temperature = 0.7  # as the MC labels
  config.ias.max_new_tokens = 224
  config.ias.confidence_top_k = 20  # DeepConf's token confidence over the top 20 (as its code)
  config.ias.group_window = 16  # DeepConf's sliding window, in tokens (solutions ~40-180)
  config.ias.deepconf_warmup = 4  # warm-up traces that set the early-stop threshold
  config.ias.deepconf_tau = 0.95  # consensus of the confidence-weighted vote (paper)
  config.ias.consistency_threshold = 0.95  # Adaptive-Consistency's Beta criterion (its default)
  config.ias.bootstrap_resamples = 2000
  config.ias.seed = 0

  # Step-level beam search on the first test questions (beams ranked by the calibrated PRM's
  # median, widths from its 0.1 quantile). Paper: K x M = 64 generations per step, M_max = 8.
  config.beam = ml_collections.ConfigDict()
  config.beam.questions = 64
  config.beam.fixed = ((1, 4), (2, 4), (4, 4))  # (K beams, M expansions) of the fixed searches
  config.beam.num_beams = 4  # K at most (IAS-of-K and IAS-of-M)
  config.beam.expansions = 4  # M at most
  config.beam.max_steps = 10  # difficulty 8 needs 8 steps and the answer line
  config.beam.max_step_tokens = 48  # one solution line is ~20 tokens
  config.beam.max_rows = 512  # rows per decode call
  return config
