r"""The main job's stages in one config: Duo-LLM stages 1-3, policy, calibrated PRM, IAS.

  python -m experiments.main                                   # quick: ~85 min on 2 CPU cores
  python -m experiments.main --config=configs/quick.py:small   # the documented small configs
  python -m experiments.main --paper --workdir=workdir/main_paper   # = configs/quick.py:paper

One section per stage, each a whole stage config: `duo` (configs/duo_small.py), `oracle`
(oracle_small), `router` (router_small), `policy` (policy_small), `calibrate`
(calibrate_small), `ias` (ias_small), `label_free` (label_free_small). The main job points
each stage's upstream fields (oracle.stage1_workdir, router.stage1_workdir / oracle_workdir /
dense_workdir, calibrate.policy_workdir, ias.policy_workdir, ias.calibrate_workdir,
label_free.policy_workdir, label_free.calibrate_workdir) at its own stage
folders under --workdir, whatever they say here. Override a field with e.g.
`--config.policy.train.num_steps=2000`.

Sizes (the argument after the colon):
  quick  (default) the small configs with fewer policy steps and fewer questions, below;
  small  the small configs unchanged: the numbers in docs/ come from them (about 3.5 hours);
  paper  stage 1 at the paper's size (configs/duo_paper.py, on C4 as its docstring runs it:
         internet and a TPU/GPU); the oracle runs oracle_small on that model, and the policy,
         calibration and IAS sections stay small (no paper-size configs exist for them).

Quick reductions, and each stage's wall time on 2 CPU cores (duo, oracle and router from a
timed run of the whole job; policy, calibrate and IAS from runs of those stages with these
configs; about 85 min in all):
  duo        duo_small unchanged (600 steps)                                      6.7 min
  oracle     oracle_small unchanged                                               2.8 min
  router     router_small with budgets 2 and 6, 150 steps, one schedule (8, 4),   4.9 min
             4 x 64 imitation tokens, no dense baselines
  policy     600 steps instead of 2000, 16 evaluation problems per difficulty     ~22 min
             instead of 32, 16 samples each (64): a weaker policy (lower accuracy on long
             problems), so the MC targets, the PRMs and the IAS numbers differ
  calibrate  128 calibration / 48 test / 24 conformal / 32 base / 24 validation    27.1 min
             questions (1536 / 256 / 64 / 96 / 128), 150 base-PRM steps (300), two
             learning rates tried on validation (3 x 2 settings): a noisier fit and a
             wide interval on the Brier ratio
  ias        64 design (64 samples each, as ias_small) / 32 validation / 64 test /  13.5 min
             64 control questions (64 / 256 / 512 / 64), pools of 16 (32), N_max 8
             or 16, 20 orders (100), beam search on 16 questions (32)
  label_free 3 rounds of 16 prompts (128), 4 samples each (8), 16 validation /      3.9 min
             32 test questions (64 / 128), 4 samples each (8), 8 steps a round (16),
             one learning rate per arm, the one the small run chose on validation
  figures    the six figure scripts                                               0.2 min
"""

import ml_collections

from configs import (
  calibrate_small,
  duo_paper,
  duo_small,
  ias_small,
  label_free_small,
  oracle_small,
  policy_small,
  router_small,
)

SIZES = ("quick", "small", "paper")


def _quick(config: ml_collections.ConfigDict) -> None:
  """The reductions of the quick run (see the docstring for what each costs and changes)."""
  router = config.router
  router.dense_workdir = ""  # no dense baselines: four more trainings
  router.router.budgets, router.router.schedules = (2, 6), ((8, 4),)
  router.router.num_steps, router.router.oracle_sequences = 150, 4
  policy = config.policy
  policy.train.num_steps = 600
  policy.train.lr_decay_steps = 600  # the cosine ends with the run
  policy.task.eval_problems_per_difficulty = 16
  policy.task.pass_at_k_samples = 16  # pass@1 / pass@16: 64 samples take ~7 more minutes

  mc = config.calibrate.mc
  mc.calibration_questions, mc.test_questions = 128, 48
  mc.conformal_questions, mc.base_questions, mc.validation_questions = 24, 32, 24
  config.calibrate.prm.base_steps = 150
  config.calibrate.prm.step_verifier_steps = 150
  config.calibrate.select.learning_rates, config.calibrate.select.batch_sizes = (3e-3, 1e-2), ()

  ias = config.ias.ias
  ias.design_questions, ias.validation_questions = 64, 32
  ias.test_questions, ias.control_questions = 64, 64
  ias.n_max, ias.fixed_ns, ias.ias_n_maxes = 16, (1, 2, 4, 8, 16), (8, 16)
  ias.online_n_maxes = (4, 8, 16)
  ias.design_samples = 64  # the regime's hopeless criterion counts among 64, as ias_small
  ias.budgets, ias.orders, ias.bootstrap_resamples = (1.0, 2.0, 4.0, 8.0), 20, 1000
  config.ias.regime.n_max_choices = (8, 16)
  config.ias.beam.questions = 16

  lf = config.label_free.label_free
  lf.prompts_per_round, lf.validation_questions, lf.test_questions = 16, 16, 32
  lf.samples_per_prompt, lf.budget_n_max, lf.eval_samples, lf.steps = 4, 8, 4, 8
  lf.learning_rates, lf.grpo_learning_rates = (1e-4,), (3e-5,)  # what the small run chose
  lf.rows, lf.bootstrap_resamples = 64, 1000


def get_config(size: str = "quick") -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f"configs/quick.py takes a size in {SIZES}, got {size!r}")
  config = ml_collections.ConfigDict()
  config.duo = (duo_paper if size == "paper" else duo_small).get_config()
  if size == "paper":
    config.duo.data.name = "c4"  # a 32k-piece tokenizer needs more text than the plays
  config.oracle = oracle_small.get_config()
  config.router = router_small.get_config()
  if size == "paper":  # dense baselines of the paper-size model: four more such trainings
    config.router.dense_workdir = ""
  config.policy = policy_small.get_config()
  config.calibrate = calibrate_small.get_config()
  config.ias = ias_small.get_config()
  config.label_free = label_free_small.get_config()

  # Estimated minutes per stage on 2 CPU cores, shown when a stage starts (-1: no estimate).
  config.minutes = ml_collections.ConfigDict()
  minutes = {"quick": (7, 3, 5, 22, 27, 7, 4, 1), "small": (10, 5, 50, 35, 95, 20, 30, 1),
             "paper": (-1, -1, -1, 35, 95, 20, 30, 1)}[size]
  for name, value in zip(("duo", "oracle", "router", "policy", "calibrate", "ias", "label_free",
                          "figures"), minutes):
    config.minutes[name] = value
  if size == "quick":
    _quick(config)
  return config
