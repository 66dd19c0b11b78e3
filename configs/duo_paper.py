r"""Duo-LLM at the paper's size (TPU/GPU): 12 layers, width 2560, big FFN 10240, small 640.

  python -m experiments.train_duo --config=configs/duo_paper.py --workdir=workdir/duo_paper \
      --config.data.name=c4

About 1.40B parameters with a 32k vocabulary and tied embeddings (the paper reports 1.4B and
does not give heads, context or tokenizer): 20 heads of 128 (the usual Llama head width),
context 2048, bfloat16 activations, rematerialized layers, FSDP-free data x model mesh.
"""

from configs import duo_small


def get_config():
  config = duo_small.get_config()
  config.model.vocab_size = 32_000
  config.model.d_model = 2560
  config.model.num_heads = 20
  config.model.head_dim = 128
  config.model.d_ff_big = 10_240
  config.model.d_ff_small = 640
  config.model.max_len = 2048
  config.model.dtype = "bfloat16"
  config.model.remat = True
  config.data.batch_size = 256
  config.train.num_steps = 100_000
  config.train.learning_rate = 3e-4
  config.train.warmup_steps = 2000
  config.train.lr_decay_steps = 100_000
  config.train.log_every = 100
  config.train.checkpoint_every = 2000
  config.eval.num_batches = 50
  return config
