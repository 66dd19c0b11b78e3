r"""Duo-LLM stage 3: learned routers on the trained duo_small model, per budget.

  python -m experiments.train_duo --config=configs/duo_small.py --workdir=workdir/duo_small
  python -m experiments.oracle --config=configs/oracle_small.py --workdir=workdir/oracle_small
  python -m experiments.dense_baseline --config=configs/router_small.py --workdir=workdir/dense_small
  python -m experiments.router --config=configs/router_small.py --workdir=workdir/router_small
  python -m experiments.router_figures --workdir=workdir/router_small

For each budget k (number of big layers out of 12) trains two routers on Shakespeare training
text with the Duo model frozen: the paper's (soft routing, temperature annealed, loss
CE + alpha * (mean P_big - k/12)^2) and one imitating the context-consistent oracle's routes
(computed on `oracle_sequences` x `oracle_seq_len` training tokens). Writes
workdir/router_small/results.json: per budget and router, held-out perplexity per domain
under argmax routing with the budget it realizes (mean big layers per token, per layer and
per position) and under budget-exact routing (exactly k big layers per token); beside them
the oracle study's rows on the same tokens, the routers' agreement with the context-consistent
oracle on held-out text, the dense model of equal FFN compute, and the budget schedules.
Expected: perplexity between all-small and all-big, falling with k; the paper router's
realized budget near k; routers between the best fixed pattern and the oracles.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage1_workdir = "workdir/duo_small"  # a finished train_duo run
  config.stage1_config = "configs/duo_small.py"  # named in the error when it is missing
  # A finished oracle study on the same model and held-out tokens (its rows go beside the
  # routers'), and the dense baselines of equal compute; "" leaves either out.
  config.oracle_workdir = "workdir/oracle_small"
  config.dense_workdir = "workdir/dense_small"  # python -m experiments.dense_baseline

  config.router = ml_collections.ConfigDict()
  config.router.budgets = (2, 4, 6, 8)  # numbers of big layers per token (0..12)
  # Weight of the budget term; (mean P_big - k/L)^2 is small (0.0025 at half a layer off
  # of 12), so it must be large to hold the budget against the CE's pull toward big.
  config.router.alpha = 100.0
  config.router.temperature_start = 1.0  # softmax temperature at step 0 (soft mixture)
  config.router.temperature_end = 0.05  # at the last step: near-hard routing
  config.router.with_skip = False  # paper router over (SKIP, SMALL, BIG) instead of (S, B)
  config.router.num_steps = 300  # AdamW steps per router
  config.router.batch_size = 16  # sequences per step, drawn from the training pool
  config.router.learning_rate = 1e-2  # constant; only the linear routers train
  config.router.weight_decay = 0.0
  config.router.seed = 0  # router init and batch draws (folded with the budget)
  config.router.train_sequences = 64  # training-split sequences the routers learn from
  config.router.seq_len = 128  # tokens per sequence (<= the model's max_len)
  # The imitation router learns from the sequential oracle, a tree search per token: its
  # routes are computed on the first oracle_sequences x oracle_seq_len of the pool.
  config.router.oracle_sequences = 8
  config.router.oracle_seq_len = 64
  config.router.eval_domains = ("shakespeare", "python_stdlib")  # held-out text, then code
  config.router.eval_sequences = 8  # held-out sequences per domain
  # Budget schedules (paper Fig. 4c): S budgets for S equal segments of each sequence; each is
  # compared with the constant budget of its mean (which must be one of `budgets`).
  config.router.schedules = ((8, 4), (4, 8))
  return config
