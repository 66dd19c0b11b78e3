"""Timing several runs side by side in one process."""

import statistics
import time

import jax


def time_interleaved(runs: dict, repeats: int) -> dict:
  """Median seconds of each `runs[name]()` (compiled first), in rotating order."""
  for run in runs.values():
    jax.block_until_ready(run())
  seconds = {name: [] for name in runs}
  names = list(runs)
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
      tick = time.perf_counter()
      jax.block_until_ready(runs[name]())
      seconds[name].append(time.perf_counter() - tick)
  return {name: statistics.median(s) for name, s in seconds.items()}
