"""Reads an experiment's results.json for a figure script, naming the experiment when missing."""

import json
import os


def load_results(workdir: str, experiment: str) -> dict:
  """`workdir/results.json`; FileNotFoundError says which experiment writes it."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: run {experiment} first")
  with open(path) as f:
    return json.load(f)
