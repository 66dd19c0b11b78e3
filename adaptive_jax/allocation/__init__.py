"""How many samples each question gets: the paper's N(p) rules (ias.py), the success estimates
they read (combined.py, probe.py), and budget-aware allocation across questions (budget.py,
online.py)."""
