"""Multi-process runs: start jax.distributed when the environment says several processes run.

Explicit: JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES=n > 1, JAX_PROCESS_ID=i on each
process. Otherwise the cluster environments jax detects by itself (jax._src.clusters), when
they hold more than one process: Open MPI (mpirun), SLURM (srun) and Cloud TPU pod slices.
"""

import os

import jax
from absl import logging
from jax._src import cloud_tpu_init
from jax._src.clusters import cloud_tpu_cluster
from jax.experimental import multihost_utils

_initialized = False


def _int(name: str, minimum: int) -> int:
  value = os.environ[name]
  try:
    number = int(value)
  except ValueError:
    number = None
  if number is None or number < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return number


def _explicit() -> dict | None:
  """initialize() arguments from JAX_* variables; {} for one process; None when none is set."""
  names = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
  if "JAX_NUM_PROCESSES" not in os.environ:
    # jax reads JAX_COORDINATOR_ADDRESS itself, with a detected cluster giving the rest.
    if "JAX_PROCESS_ID" in os.environ or (
        "JAX_COORDINATOR_ADDRESS" in os.environ and _cluster() is None):
      set_names = [n for n in names if n in os.environ]
      raise ValueError(f"JAX_NUM_PROCESSES must be set with {' and '.join(set_names)}")
    return None
  num_processes = _int("JAX_NUM_PROCESSES", minimum=1)
  if "JAX_PROCESS_ID" in os.environ:
    process_id = _int("JAX_PROCESS_ID", minimum=0)
    if process_id >= num_processes:
      raise ValueError(f"JAX_PROCESS_ID must be < JAX_NUM_PROCESSES={num_processes}, "
                       f"got {process_id}")
  if num_processes == 1:
    return {}
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_PROCESS_ID"):
    if name not in os.environ:
      raise ValueError(f"{name} must be set when JAX_NUM_PROCESSES={num_processes}")
  address = os.environ["JAX_COORDINATOR_ADDRESS"]
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"JAX_COORDINATOR_ADDRESS must be host:port, got {address!r}")
  return {"coordinator_address": address, "num_processes": num_processes,
          "process_id": process_id}


def _gce_tpu_hosts() -> int:
  """Hosts of this Cloud TPU VM's slice, from its metadata server (as jax finds them).

  Unreadable metadata raises: guessing one host would, on a pod slice, run each host as an
  independent job writing into the same workdir.
  """
  try:
    if not cloud_tpu_cluster.GceTpuCluster.is_env_present():
      return 1
    return cloud_tpu_cluster.GceTpuCluster.get_process_count()
  except Exception as e:
    raise RuntimeError(
        f"TPU VM metadata unreadable ({type(e).__name__}: {e}), so the number of hosts in "
        "this slice is unknown. On one host set TPU_SKIP_MDS_QUERY=1 (or JAX_NUM_PROCESSES=1); "
        "on a pod slice set TPU_WORKER_HOSTNAMES, or JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES and JAX_PROCESS_ID") from e


def _cluster() -> str | None:
  """The multi-process cluster environment jax would detect, named by its variable; else None."""
  # The checks of jax._src.clusters, in jax's order, plus "more than one process".
  if "OMPI_COMM_WORLD_SIZE" in os.environ and _int("OMPI_COMM_WORLD_SIZE", 1) > 1:
    if "OMPI_MCA_orte_hnp_uri" not in os.environ:  # Open MPI >= 5: jax finds no coordinator
      raise ValueError("OMPI_COMM_WORLD_SIZE > 1 without OMPI_MCA_orte_hnp_uri: set "
                       "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID")
    return "OMPI_COMM_WORLD_SIZE"
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
           "SLURM_LOCALID")
  if all(name in os.environ for name in slurm) and _int("SLURM_NTASKS", 1) > 1:
    return "SLURM_NTASKS"
  if not cloud_tpu_init.running_in_cloud_tpu_vm:
    return None
  if "MEGASCALE_NUM_SLICES" in os.environ and _int("MEGASCALE_NUM_SLICES", 1) > 1:
    return "MEGASCALE_NUM_SLICES"
  for name in ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES"):  # GKE sets these
    if name in os.environ:
      return name if len(os.environ[name].split(",")) > 1 else None
  if os.environ.get("TPU_SKIP_MDS_QUERY") is None and _gce_tpu_hosts() > 1:
    return "worker-network-endpoints"  # a TPU VM pod slice: `gcloud ... ssh --worker=all`
  return None


def initialize() -> bool:
  """Calls jax.distributed.initialize() when several processes run; returns whether they do.

  Call it first in main, before anything touches a device. A second call does nothing and
  returns the first call's answer. A malformed variable raises a ValueError naming it.
  """
  global _initialized
  if _initialized or jax.distributed.is_initialized():
    return True
  args = _explicit()
  if args is None:
    cluster = _cluster()
    if cluster is None:
      return False
    args = {}
    logging.info("multi-process run detected from %s", cluster)
  elif not args:
    return False
  jax.distributed.initialize(**args)
  _initialized = True
  logging.info("jax.distributed: process %d of %d, %d local of %d devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def is_writer() -> bool:
  """Whether this process writes the run's files (process 0; every single-process run)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process gets here (`name` must match across them); free with one."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def writer_first(fn):
  """fn() on process 0, then on the others: one process builds what all then load."""
  if is_writer():
    value = fn()
  barrier("writer_first")
  return value if is_writer() else fn()
