r"""Duo-LLM stage 1 in seconds on CPU, for tests: 3 layers, width 32.

  python -m experiments.train_duo --config=configs/duo_tiny.py --workdir=workdir/duo_tiny

Writes results.json like duo_small; the numbers only check that the pipeline runs.
"""

from configs import duo_small


def get_config():
  config = duo_small.get_config()
  config.model.vocab_size = 512
  config.model.num_layers = 3
  config.model.d_model = 32
  config.model.num_heads = 2
  config.model.head_dim = 16
  config.model.d_ff_big = 128
  config.model.d_ff_small = 8
  config.model.max_len = 32
  config.data.batch_size = 8
  config.train.num_steps = 20
  config.train.warmup_steps = 5
  config.train.lr_decay_steps = 20
  config.train.log_every = 5
  config.train.checkpoint_every = 10
  config.eval.num_batches = 2
  return config
