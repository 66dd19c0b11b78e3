r"""PRM scoring in beam search: extending each beam's cached prefix vs rescoring whole sequences.

  python -m benchmarks.prm_scoring --questions=8 --beams=4 --expansions=4 --steps=6 --repeats=3

A calibrated PRM of the policy_small shape (4 layers, D=128, 4 heads of 32, random init with
nonzero calibration offsets) scores a step-level beam search (`sampler.beam.beam_search`, fixed
width K x M) whose steps are drawn by a synthetic expander (8-24 random tokens ending in "\n",
from the step key), so the time is the scoring's. Two score functions:
- full_rescoring: every new candidate's whole sequence, right-padded to a multiple of 64 tokens
  and rows to a power of two (`scoring.position_probabilities`, read at the last token);
- cached_prm_scoring: `cached_scoring.PrefixScorer`, each candidate running only the tokens
  after its beam's cached prefix (a fresh scorer per search).
Both searches must keep the same beams, choose the same completions, and give scores equal to
2e-5 (checked before timing). Timed in one process, interleaved, median of --repeats, after one
warm-up run of each (compilation excluded). Last line:
`cached_prm_scoring/full_rescoring = <r>` (goal <= 0.5).
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.prm import fit, scoring
from adaptive_jax.prm.cached_scoring import PrefixScorer
from adaptive_jax.sampler import beam, decode
from benchmarks.timing import time_interleaved

_QUESTIONS = flags.DEFINE_integer("questions", 8, "Prompts searched together.")
_BEAMS = flags.DEFINE_integer("beams", 4, "K: beams kept per step.")
_EXPANSIONS = flags.DEFINE_integer("expansions", 4, "M: steps drawn per beam.")
_STEPS = flags.DEFINE_integer("steps", 6, "Expansion rounds.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved timed runs of each scorer.")

CFG = ModelConfig(vocab_size=259, num_layers=4, d_model=128, num_heads=4, head_dim=32,
                  d_ff_big=512, d_ff_small=0, max_len=512, duo=False)
LEVELS = (0.1, 0.5, 0.9)
NEWLINE, EOS = 13, 2


def calibrated_params(seed: int = 0):
  params = fit.init_params(CFG, len(LEVELS), 8, seed=seed)
  key = jax.random.key(seed + 1)
  params["delta"] = jax.tree.map(lambda x: jax.random.normal(key, x.shape) * 0.3, params["delta"])
  params["base_gain"] = jnp.float32(0.2)
  return params


def full_rescoring(params):
  """The whole sequence of every candidate, bucketed to 64-token widths and power-of-2 rows."""
  def score(sequences):
    width = -(-max(map(len, sequences)) // 64) * 64
    rows = decode.power_of_two_rows(len(sequences))
    tokens_NxT = np.zeros((rows, width), np.int32)
    for i, s in enumerate(sequences):
      tokens_NxT[i, :len(s)] = s
    probs = scoring.position_probabilities(params, tokens_NxT, model_cfg=CFG,
                                           num_quantiles=len(LEVELS))
    return np.asarray(probs)[np.arange(len(sequences)), [len(s) - 1 for s in sequences]]
  return score


def expand(prefixes, key):
  """One synthetic step per prefix: 8-24 random tokens ending in a newline."""
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())
  return [list(rng.integers(20, 259, rng.integers(7, 24))) + [NEWLINE] for _ in prefixes]


def search(score_fn, prompts):
  config = beam.BeamConfig(_BEAMS.value, _EXPANSIONS.value, max_steps=_STEPS.value,
                           step_end_id=NEWLINE, rank_column=1, lower_column=0)
  return beam.beam_search(prompts, expand, score_fn, lambda completion: None, config=config,
                          key=jax.random.key(0))


def main(argv):
  del argv
  params = calibrated_params()
  rng = np.random.default_rng(0)
  prompts = [[EOS] + list(rng.integers(20, 259, rng.integers(40, 80)))
             for _ in range(_QUESTIONS.value)]
  full = search(full_rescoring(params), prompts)
  scorer = PrefixScorer(params, CFG, len(LEVELS))
  cached = search(scorer, prompts)
  for f, c in zip(full, cached):
    if f.completion != c.completion or f.generations_per_step != c.generations_per_step:
      raise AssertionError("cached and full scoring kept different beams")
    np.testing.assert_allclose(c.score, f.score, atol=2e-5)
  print(f"{len(prompts)} questions, K={_BEAMS.value} M={_EXPANSIONS.value}, {_STEPS.value} "
        f"steps: {sum(r.prm_tokens for r in full)} PRM tokens scored by full rescoring, "
        f"{scorer.tokens_real} run by the cached scorer ({scorer.tokens_run} with chunk padding)")
  seconds = time_interleaved({
      "full_rescoring": lambda: search(full_rescoring(params), prompts),
      "cached_prm_scoring": lambda: search(PrefixScorer(params, CFG, len(LEVELS)), prompts),
  }, _REPEATS.value)
  for name, s in seconds.items():
    print(f"{name}: {s:.3f} s")
  print(f"cached_prm_scoring/full_rescoring = "
        f"{seconds['cached_prm_scoring'] / seconds['full_rescoring']:.3f}")


if __name__ == "__main__":
  app.run(main)
