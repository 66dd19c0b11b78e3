r"""The paper's p_big ablation on duo_small: train with p_big in {0, .25, .5, .75, 1}.

  for p in 0 0.25 0.5 0.75 1; do
    python -m experiments.train_duo --config=configs/duo_pbig_ablation.py:$p \
        --workdir=workdir/duo_pbig_$p
  done

Each results.json holds the held-out perplexity under all-small / random / all-big routing.
Paper: training with p_big = 0.5 gives both modules good quality; p_big = 0 (1) leaves the
big (small) module untrained.
"""

from configs import duo_small

P_BIG_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)


def get_config(p_big: str = "0.5"):
  config = duo_small.get_config()
  value = float(p_big)
  if value not in P_BIG_VALUES:
    raise ValueError(f"duo_pbig_ablation takes p_big in {P_BIG_VALUES}, got {p_big!r}")
  config.routing.p_big = value
  return config
