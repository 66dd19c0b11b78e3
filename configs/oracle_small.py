r"""Duo-LLM stage 2: oracle routing under a budget, on the trained duo_small model.

  python -m experiments.train_duo --config=configs/duo_small.py --workdir=workdir/duo_small
  python -m experiments.oracle --config=configs/oracle_small.py --workdir=workdir/oracle_small

Writes workdir/oracle_small/results.json: per domain (held-out Shakespeare plays, Python
source) and per budget k (number of big layers, 0..12) the perplexity of the paper's oracle
(per-token minimum over 2^12 patterns), the context-consistent oracle, the best fixed
pattern and the best of 100 random patterns; all-small and all-big; and NPZ arrays for the
figures (`python -m experiments.oracle_figures`). Paper: oracle perplexity falls until about
k = L/2 then rises, with one big layer the oracle beats all-big, later layers are used at
low budgets. About 10 minutes on 2 CPU cores.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage1_workdir = "workdir/duo_small"  # a finished train_duo run
  config.stage1_config = "configs/duo_small.py"  # named in the error when it is missing

  config.oracle = ml_collections.ConfigDict()
  config.oracle.domains = ("shakespeare", "python_stdlib")  # held-out text, then code
  config.oracle.num_sequences = 8  # held-out sequences per domain for the pattern oracle
  config.oracle.seq_len = 128  # tokens per sequence (<= the model's max_len)
  config.oracle.chunk_sequences = 4  # sequences per pattern-matrix call (memory)
  config.oracle.split_depth = 6  # breadth-first to this depth, then subtrees in chunks
  config.oracle.budgets = tuple(range(13))  # numbers of big layers to report
  config.oracle.random_patterns = 100  # the random baseline's best-of-N
  config.oracle.seed = 0  # draws of the random baseline and the skip subsample
  # The context-consistent oracle costs a tree search per token: fewer tokens.
  config.oracle.sequential_sequences = 2
  config.oracle.sequential_seq_len = 64
  config.oracle.sequential_budgets = (0, 1, 2, 4, 6, 8, 10, 12)
  # Skip variant (3^12 = 531,441 patterns): an explicit random subsample, reported as such.
  config.oracle.skip_patterns = 512
  config.oracle.skip_sequences = 2
  config.oracle.text_budget = 6  # budget of the per-token loss figures (Fig. 5/6)
  return config
