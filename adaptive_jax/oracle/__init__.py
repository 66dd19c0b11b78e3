"""Duo-LLM stage 2: per-token losses of routing patterns, and oracle / baselines per budget."""

from adaptive_jax.oracle.budget import (
  budget_table,
  fixed,
  oracle,
  random_best_of,
  scheduled_oracle,
  with_budget,
)
from adaptive_jax.oracle.pattern_tree import (
  naive_layer_evals,
  pattern_flops,
  pattern_loss_matrix,
  pattern_routes,
  route_options,
  shared_layer_evals,
  subset_loss_matrix,
)

__all__ = [
    "budget_table",
    "fixed",
    "oracle",
    "random_best_of",
    "scheduled_oracle",
    "with_budget",
    "naive_layer_evals",
    "pattern_flops",
    "pattern_loss_matrix",
    "pattern_routes",
    "route_options",
    "shared_layer_evals",
    "subset_loss_matrix",
]
