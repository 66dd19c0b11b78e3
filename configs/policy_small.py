r"""The reasoning policy on CPU: a 4-layer dense transformer trained on chained arithmetic.

  python -m experiments.train_policy --config=configs/policy_small.py --workdir=workdir/policy_small

Trains on gold solutions of difficulties 1-8 (byte-level tokens, whole problems packed into
rows with a segment mask, loss on the solutions), then writes results.json
with greedy accuracy, and pass@1 and pass@64 of 64 samples at temperature 0.7, per difficulty
on held-out problems, printed as a table. Expected: high
accuracy on 1-step problems, falling with the number of steps.
"""

import ml_collections

from configs import duo_small


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = duo_small.get_config().model
  config.model.duo = False  # the policy is dense: only the "big" FFN, 4 x width
  config.model.vocab_size = 259  # bytes + pad, bos, eos (adaptive_jax.tasks.byte_tokenizer)
  config.model.num_layers = 4
  config.model.max_len = 512

  config.task = ml_collections.ConfigDict()
  config.task.train_problems = 200_000  # generated on the fly by index
  config.task.train_seed = 0
  config.task.train_difficulties = (1, 2, 3, 4, 5, 6, 7, 8)
  config.task.eval_problems_per_difficulty = 32
  config.task.eval_seed = 1  # held-out problems
  # Packed rows of whole problems (policy/data.py): at least the longest problem of the
  # trained difficulties plus BOS and EOS (difficulty 8: 386 tokens), checked in code.
  config.task.seq_len = 400
  config.task.loss_on_question = False  # the loss covers the solution and its EOS only
  config.task.batch_size = 32
  config.task.max_new_tokens = 224  # enough for difficulty 8 (~180 bytes)
  config.task.pass_at_k_samples = 64  # sampled solutions per evaluation problem: pass@1, pass@64
  config.task.sample_temperature = 0.7

  config.train = duo_small.get_config().train
  config.train.num_steps = 2000
  config.train.warmup_steps = 50
  config.train.lr_decay_steps = 2000
  config.train.log_every = 50
  config.train.checkpoint_every = 200
  return config
