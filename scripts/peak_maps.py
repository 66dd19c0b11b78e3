r"""Samples a process's memory-map count (lines of /proc/PID/maps) and keeps the peak.

  python scripts/peak_maps.py --pid=1234 --out=/tmp/peak.txt
  python scripts/peak_maps.py --out=/tmp/peak.txt -- python -m pytest -q -p no:randomly tests

Every compiled XLA executable keeps its own mappings, so a process that compiles hundreds of
programs climbs towards the kernel's vm.max_map_count (65,530 by default) and then dies with a
segfault or abort. With --pid it follows that process until it exits; after `--` it runs the
command and follows it (its exit status is this script's). Each sample rewrites --out with
`peak_maps = N` (and the limit), so the file is current while the process still runs; the same
line is printed at the end. Sampling stops with the process: the peak is the largest sample,
so a short spike between samples can be missed (lower --interval).
"""

import argparse
import os
import subprocess
import sys
import time


def map_count(pid: int) -> int | None:
  """Lines of /proc/PID/maps, or None once the process is gone."""
  try:
    with open(f"/proc/{pid}/maps", "rb") as f:
      return sum(1 for _ in f)
  except (FileNotFoundError, ProcessLookupError, PermissionError):
    return None


def max_map_count() -> int | None:
  try:
    with open("/proc/sys/vm/max_map_count") as f:
      return int(f.read())
  except OSError:
    return None


def _write(path: str, peak: int, last: int, limit: int | None) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.write(f"peak_maps = {peak}\nlast_maps = {last}\nvm.max_map_count = {limit}\n")
  os.replace(tmp, path)


def follow(pid: int, interval: float, out: str | None, alive=None) -> int:
  """The peak map count of `pid`, sampled every `interval` seconds until it exits."""
  limit, peak, last = max_map_count(), 0, 0
  while alive is None or alive():
    count = map_count(pid)
    if count is None:
      break
    peak, last = max(peak, count), count
    if out:
      _write(out, peak, last, limit)
    time.sleep(interval)
  return peak


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pid", type=int, help="follow this process")
  parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
  parser.add_argument("--out", help="file rewritten with the peak after every sample")
  parser.add_argument("command", nargs="*", help="a command to run and follow (after --)")
  args = parser.parse_args()
  if (args.pid is None) == (not args.command):
    parser.error("give either --pid or a command after --")
  rc = 0
  if args.pid is not None:
    peak = follow(args.pid, args.interval, args.out)
  else:
    proc = subprocess.Popen(args.command)
    peak = follow(proc.pid, args.interval, args.out, alive=lambda: proc.poll() is None)
    rc = proc.wait()
  print(f"peak_maps = {peak} (vm.max_map_count = {max_map_count()})", flush=True)
  return rc


if __name__ == "__main__":
  sys.exit(main())
