"""Multi-process runs: which environments start jax.distributed, and 2 real CPU processes."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from adaptive_jax import data
from adaptive_jax.train import distributed
from adaptive_jax.train import mesh as mesh_lib
from adaptive_jax.train.evaluate import evaluate
from adaptive_jax.train.loop import train, typed_configs
from adaptive_jax.train.metrics import read_metrics
from tests.compile_flags import with_fast_compile
from tests.test_train import _config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
              "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "SLURM_JOB_ID",
              "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
              "MEGASCALE_NUM_SLICES", "TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES",
              "TPU_SKIP_MDS_QUERY")


@pytest.fixture
def calls(monkeypatch):
  """A clean environment; jax.distributed.initialize records its arguments instead of running."""
  for name in _VARIABLES:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(distributed, "_initialized", False)
  monkeypatch.setattr(distributed.cloud_tpu_init, "running_in_cloud_tpu_vm", False)
  recorded = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: recorded.append(kwargs))
  return recorded


def test_single_process_does_not_initialize(calls, monkeypatch):
  assert not distributed.initialize()
  monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
  monkeypatch.setenv("SLURM_NTASKS", "1")  # an sbatch shell of one task: not a cluster run
  assert not distributed.initialize()
  assert calls == []


def test_explicit_variables_are_passed_once(calls, monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  assert distributed.initialize()
  assert distributed.initialize()  # idempotent: the second call starts nothing
  assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                    "process_id": 3}]


@pytest.mark.parametrize("env, match", [
    ({"JAX_NUM_PROCESSES": "abc"}, "JAX_NUM_PROCESSES must be an integer >= 1, got 'abc'"),
    ({"JAX_NUM_PROCESSES": "0"}, "JAX_NUM_PROCESSES must be an integer >= 1"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS must be set"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "h:1"}, "JAX_PROCESS_ID must be set"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "2"},
     "JAX_PROCESS_ID must be < JAX_NUM_PROCESSES=2, got 2"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "-1"},
     "JAX_PROCESS_ID must be an integer >= 0"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "host", "JAX_PROCESS_ID": "0"},
     "JAX_COORDINATOR_ADDRESS must be host:port, got 'host'"),
    ({"JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "1"}, "JAX_PROCESS_ID must be < JAX_NUM_PR"),
    ({"JAX_PROCESS_ID": "1"}, "JAX_NUM_PROCESSES must be set with JAX_PROCESS_ID"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "JAX_NUM_PROCESSES must be set"),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "x",
      "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, "SLURM_NTASKS must be an integer >= 1"),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "without OMPI_MCA_orte_hnp_uri"),
])
def test_bad_variables_raise_naming_them(calls, monkeypatch, env, match):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ValueError, match=match):
    distributed.initialize()
  assert calls == []


_SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
          "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}


@pytest.mark.parametrize("env, on_tpu_vm, started", [
    (_SLURM, False, True),
    ({**_SLURM, "SLURM_NTASKS": "1"}, False, False),
    ({k: v for k, v in _SLURM.items() if k != "SLURM_STEP_NODELIST"}, False, False),  # no srun
    ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:5", "OMPI_COMM_WORLD_SIZE": "2"}, False, True),
    ({"TPU_WORKER_HOSTNAMES": "t-0,t-1,t-2,t-3"}, True, True),
    ({"TPU_WORKER_HOSTNAMES": "t-0"}, True, False),
    ({"TPU_WORKER_HOSTNAMES": "t-0,t-1"}, False, False),  # jax too ignores it off a TPU VM
    ({"MEGASCALE_NUM_SLICES": "2", "TPU_WORKER_HOSTNAMES": "t-0"}, True, True),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.9:99", **_SLURM}, False, True),  # jax reads the address
])
def test_cluster_environments_jax_detects(calls, monkeypatch, env, on_tpu_vm, started):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setattr(distributed.cloud_tpu_init, "running_in_cloud_tpu_vm", on_tpu_vm)
  monkeypatch.setattr(distributed, "_gce_tpu_hosts", lambda: pytest.fail("metadata queried"))
  assert distributed.initialize() == started
  assert calls == ([{}] if started else [])  # jax detects the details itself


@pytest.mark.parametrize("hosts", [1, 4])
def test_tpu_vm_slice_asks_the_metadata_server(calls, monkeypatch, hosts):
  monkeypatch.setattr(distributed.cloud_tpu_init, "running_in_cloud_tpu_vm", True)
  gce = distributed.cloud_tpu_cluster.GceTpuCluster
  monkeypatch.setattr(gce, "is_env_present", classmethod(lambda cls: True))
  monkeypatch.setattr(gce, "get_process_count", classmethod(lambda cls: hosts))
  assert distributed.initialize() == (hosts > 1)


def test_unreadable_tpu_metadata_raises_naming_the_ways_out(calls, monkeypatch):
  # Not one host by default: on a pod slice that would run N jobs into one workdir.
  monkeypatch.setattr(distributed.cloud_tpu_init, "running_in_cloud_tpu_vm", True)

  def unreachable(cls):
    raise ConnectionError("metadata.google.internal")
  monkeypatch.setattr(distributed.cloud_tpu_cluster.GceTpuCluster, "is_env_present",
                      classmethod(unreachable))
  with pytest.raises(RuntimeError, match=r"TPU VM metadata unreadable \(ConnectionError: "
                     r"metadata.google.internal\).*TPU_SKIP_MDS_QUERY=1.*JAX_NUM_PROCESSES"):
    distributed.initialize()
  assert not calls
  # Saying how many hosts there are needs no metadata.
  monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")
  assert not distributed.initialize()
  monkeypatch.delenv("TPU_SKIP_MDS_QUERY")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
  assert not distributed.initialize()


def test_data_shard_of_one_process_is_the_whole_batch():
  assert mesh_lib.data_shard(mesh_lib.make_mesh((-1, 1)), 8) == (0, 1)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_processes(script: str, args, timeout: int) -> list[dict]:
  """Runs `script` as processes 0 and 1 of one run on CPU; the JSON each prints after RESULT."""
  address = f"127.0.0.1:{_free_port()}"
  procs = []
  for process_id in (0, 1):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
           "XLA_FLAGS": with_fast_compile(), "JAX_COORDINATOR_ADDRESS": address,
           "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(process_id)}
    procs.append(subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env,
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True))
  outputs = []
  try:
    for proc in procs:
      stdout, stderr = proc.communicate(timeout=timeout)
      assert proc.returncode == 0, stderr[-3000:]
      outputs.append(json.loads(stdout.split("RESULT", 1)[1]))
  finally:
    for proc in procs:
      proc.kill()
      proc.wait()
  return outputs


_SUM = textwrap.dedent("""
    import json
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from adaptive_jax.train import distributed
    from adaptive_jax.train import mesh as mesh_lib
    assert distributed.initialize()
    assert jax.process_count() == 2 and jax.device_count() == 2
    mesh = jax.make_mesh((2,), ("data",))
    rows = np.arange(6, dtype=np.float32).reshape(2, 3) + 100 * jax.process_index()
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), rows)
    total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, P()))(x)
    shards = [mesh_lib.data_shard(mesh_lib.make_mesh(shape), 8) for shape in [(2, 1), (1, 2)]]
    print("RESULT" + json.dumps({"shape": x.shape, "sum": float(total),
                                 "writer": distributed.is_writer(), "shards": shards}))
""")


def test_two_processes_sum_over_a_global_array():
  # Each process holds 2 rows of a [4, 3] array; the jitted sum needs both (gloo collectives).
  outputs = _run_processes(_SUM, [], timeout=60)
  expected = 2 * sum(range(6)) + 100 * 6
  assert [o["sum"] for o in outputs] == [expected, expected]
  assert [o["shape"] for o in outputs] == [[4, 3], [4, 3]]
  assert [o["writer"] for o in outputs] == [True, False]
  # A (2, 1) mesh splits the batch between the processes; (1, 2) gives both all rows.
  assert [o["shards"] for o in outputs] == [[[0, 2], [0, 1]], [[1, 2], [0, 1]]]


_TRAIN = textwrap.dedent("""
    import json, sys
    from adaptive_jax.train import distributed
    distributed.initialize()
    from adaptive_jax.train.loop import train_and_evaluate
    from adaptive_jax.train.metrics import read_metrics
    from tests.test_train import _config
    config = _config(sys.argv[1], num_steps=2, checkpoint_every=1)
    results = train_and_evaluate(config, sys.argv[2])
    print("RESULT" + json.dumps({"losses": [r["train/loss"] for r in read_metrics(sys.argv[2])],
                                 "results": results}))
""")


class _Concat:
  """Rows of process 0's batch, then process 1's: the global batch a 2-process run trains on."""

  def __init__(self, iterators):
    self._iterators = iterators

  def __next__(self):
    parts = [next(it) for it in self._iterators]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self) -> bytes:  # what grain's checkpoint handler saves
    return json.dumps([it.get_state() for it in self._iterators]).encode()


def test_two_process_training_matches_one_process_on_the_same_batches(tmp_path):
  config = _config(str(tmp_path / "data"), num_steps=2, checkpoint_every=1)
  model_cfg, data_cfg, routing_cfg, train_cfg, eval_cfg = typed_configs(config)
  tokenizer = data.prepare(data_cfg)
  workdir = tmp_path / "two"
  two = _run_processes(_TRAIN, [data_cfg.data_dir, workdir], timeout=300)

  iterators = [data.make_train_iterator(data_cfg, tokenizer, process_index=p, process_count=2)
               for p in (0, 1)]
  mesh = mesh_lib.make_mesh(train_cfg.mesh_shape)
  state = train(model_cfg, routing_cfg, train_cfg, mesh, str(tmp_path / "one"),
                _Concat(iterators), data_cfg.seq_len)
  eval_batches = data.make_eval_batches(data_cfg, tokenizer, num_batches=eval_cfg.num_batches)
  one_eval = evaluate(state.params, state.apply_fn, eval_batches, model_cfg, eval_cfg, mesh)
  one_losses = [row["train/loss"] for row in read_metrics(tmp_path / "one")]

  assert two[0] == two[1]  # both processes return the same losses and results
  np.testing.assert_allclose(two[0]["losses"], one_losses, atol=1e-5, rtol=0)
  for key, value in one_eval.items():
    np.testing.assert_allclose(two[0]["results"][key], value, rtol=1e-5)
  # Process 0 alone wrote the files; each process saved its own data-iterator state.
  assert json.loads((workdir / "results.json").read_text()) == two[0]["results"]
  assert len(read_metrics(workdir)) == 2
  saved = os.listdir(workdir / "checkpoints" / "2" / "data")
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(saved)
