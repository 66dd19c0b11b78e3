"""Metrics to TensorBoard event files (tensorboardX: no TensorFlow) and to log lines."""

import json
import os

import numpy as np
from absl import logging
from tensorboardX import SummaryWriter

from adaptive_jax import atomic_file
from adaptive_jax.train import distributed


class MetricWriter:
  """Writes scalars to `<workdir>/tensorboard` and appends them to `<workdir>/metrics.jsonl`.

  In a multi-process run only process 0 writes; the others' calls do nothing.
  """

  def __init__(self, workdir: str):
    self._writes = distributed.is_writer()
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard")) if self._writes else None
    self._jsonl_path = os.path.join(workdir, "metrics.jsonl")

  def truncate_after(self, step: int) -> None:
    """Drops logged lines past `step` (a resumed run re-logs them)."""
    if not self._writes or not os.path.exists(self._jsonl_path):
      return
    with open(self._jsonl_path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    atomic_file.write_text(self._jsonl_path,
                           "".join(json.dumps(row) + "\n" for row in rows if row["step"] <= step))

  def write_scalars(self, step: int, scalars: dict) -> None:
    if not self._writes:
      return
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    for key, value in scalars.items():
      self._tb.add_scalar(key, value, step)
    with open(self._jsonl_path, "a") as f:
      f.write(json.dumps({"step": step, **scalars}) + "\n")
    logging.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """Rows of `<workdir>/metrics.jsonl` in step order."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]
