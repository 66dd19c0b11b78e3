"""The label-free study's arms by name, and which of them the headline may report.

  supervised        fine-tuning on gold solutions: the labelled reference
  majority          fine-tuning on a sample holding the majority answer (TTRL's pseudo-label)
  best_of_n         fine-tuning on the verifier's best sample (rejection-sampling fine-tuning)
  budget_best_of_n  best_of_n with the samples spread by the budget-aware allocator
  grpo              GRPO with the verifier's score as reward (TAO)
  rule_best_of_n    best-of-N by the exact step checker: a ceiling, not a label-free method

Only `LABEL_FREE` arms can be the reported label-free arm: a new arm is a reference until it
is added there.
"""

SUPERVISED = "supervised"
RULE = "rule_best_of_n"
LABEL_FREE = ("majority", "best_of_n", "budget_best_of_n", "grpo")
SAMPLING = LABEL_FREE + (RULE,)  # the arms that draw from the policy
ALL = (SUPERVISED,) + SAMPLING
