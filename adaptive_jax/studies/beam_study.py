"""Step-level beam search with the calibrated PRM: fixed K x M against IAS-of-K and IAS-of-M.

Beams are ranked by the calibrated PRM's median quantile; the IAS width rules read its 0.1
quantile (`allocation.ias`: IAS-of-K keeps the fewest beams whose M expansions each cover N(p) of the
weakest kept; IAS-of-M draws ceil(N(p_min) / K) expansions per beam, at most M). Compute is
counted as in the best-of-N study: policy tokens generated (the prompt once, prefixes shared)
and PRM tokens read.
"""

import dataclasses

import jax
import numpy as np

from adaptive_jax.allocation import ias
from adaptive_jax.prm import cached_scoring, scoring
from adaptive_jax.sampler import beam
from adaptive_jax.sampler.decode import SamplingPolicy
from adaptive_jax.tasks.problem import extract_answer
from adaptive_jax.typed_config import check_int


@dataclasses.dataclass(frozen=True)
class BeamStudyConfig:
  """See configs/ias_small.py (section `beam`)."""
  questions: int = 64  # the first questions of the test split
  fixed: tuple[tuple[int, int], ...] = ((1, 4), (2, 4), (4, 4))  # (K, M) of fixed searches
  num_beams: int = 4  # K at most, for IAS-of-K and IAS-of-M
  expansions: int = 4  # M at most
  max_steps: int = 10
  max_step_tokens: int = 48
  max_rows: int = 512

  def __post_init__(self):
    for name in ("questions", "num_beams", "expansions", "max_steps", "max_step_tokens",
                 "max_rows"):
      check_int("beam", name, getattr(self, name))
    if not self.fixed or any(len(km) != 2 or min(km) < 1 for km in self.fixed):
      raise ValueError(f"beam.fixed must be (K, M) pairs of integers >= 1, got {self.fixed}")


def _score_fn(models):
  """score_fn(sequences) -> [q0.1, q0.5, q0.9, mean, base] of each whole sequence; each new
  candidate extends its beam's cached PRM state (cached_scoring.py)."""
  return cached_scoring.PrefixScorer(models.calibrated, models.prm_cfg, len(models.levels))


def run_beams(models, problems, prompts: list[list[int]], cfg: BeamStudyConfig, *,
              temperature: float, q: float, key) -> dict:
  """{variant: (correct_Q, policy_tokens_Q, prm_tokens_Q, generations_Q)} on `problems`."""
  cols = scoring.columns(models.levels)
  tokenizer, (step_end_id, *extra_step_end_ids) = models.tokenizer, models.step_end_ids
  expand = beam.step_expander(models.policy, models.policy_cfg,
                              max_step_tokens=cfg.max_step_tokens,
                              policy=SamplingPolicy(temperature=temperature),
                              newline_id=models.step_end_ids, eos_id=tokenizer.eos_id,
                              pad_id=tokenizer.pad_id, max_rows=cfg.max_rows)
  score = _score_fn(models)
  k_max, m_max = cfg.num_beams, cfg.expansions
  variants = {f"fixed_K{k}_M{m}": (k, m, None) for k, m in cfg.fixed}
  variants["ias_of_k"] = (k_max, m_max, lambda p: (int(ias.num_beams(p, m_max=m_max, q=q)), m_max))
  variants["ias_of_m"] = (k_max, m_max,
                          lambda p: (k_max, int(ias.num_expansions(p, m_max=m_max, q=q))))
  out = {}
  for name, (k, m, width) in variants.items():
    config = beam.BeamConfig(k, m, max_steps=cfg.max_steps,
                             step_end_id=step_end_id,
                             extra_step_end_ids=tuple(extra_step_end_ids),
                             rank_column=cols["q0.5"], lower_column=cols["q0.1"])
    results = beam.beam_search(prompts, expand, score,
                               lambda completion: extract_answer(tokenizer.decode(completion)),
                               config=config, width=width,
                               key=jax.random.fold_in(key, len(out)))
    out[name] = (np.array([r.answer == p.answer for r, p in zip(results, problems)], float),
                 np.array([r.policy_tokens for r in results]),
                 np.array([r.prm_tokens for r in results]),
                 np.array([r.generations for r in results]))
  return out
