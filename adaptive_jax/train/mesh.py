"""Device mesh with ('data', 'model') axes and logical-to-mesh shardings."""

import flax.linen as nn
import jax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "model")


def make_mesh(mesh_shape: tuple[int, int]) -> jax.sharding.Mesh:
  """A (data, model) mesh over all devices; a -1 entry takes the devices left over."""
  num_devices = jax.device_count()
  shape = list(mesh_shape)
  if shape.count(-1) > 1:
    raise ValueError(f"train.mesh_shape may hold at most one -1, got {tuple(mesh_shape)}")
  if -1 in shape:
    known = -shape[0] * shape[1]  # product of the sizes that are not -1
    if num_devices % known:
      raise ValueError(f"train.mesh_shape {tuple(mesh_shape)} does not divide {num_devices} devices")
    shape[shape.index(-1)] = num_devices // known
  if shape[0] * shape[1] != num_devices:
    raise ValueError(f"train.mesh_shape {tuple(shape)} needs {shape[0] * shape[1]} devices, "
                     f"have {num_devices}")
  # Flax linen logical partitioning works with Auto axes (make_mesh defaults to Explicit).
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_shardings(abstract_tree, mesh, rules):
  """NamedShardings for a tree whose leaves carry flax logical axis names (boxes)."""
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_tree), mesh, rules)


def batch_sharding(mesh) -> NamedSharding:
  """Batches are split over 'data' along their leading axis and replicated over 'model'."""
  return NamedSharding(mesh, P("data"))


def data_shard(mesh, batch_size: int) -> tuple[int, int]:
  """(index, count): this process reads share `index` of `count` of each global batch.

  Processes whose devices hold the same batch rows (the 'model' axis spanning hosts) share
  an index and must read the same data. Example: 2 hosts of 4 devices, mesh (8, 1): host 1
  holds rows 4..7 of 8, so (1, 2); mesh (2, 4): host 1 holds rows 4..7 too; mesh (1, 8):
  both hold every row, so (0, 1).
  """
  indices = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
  starts = sorted({index[0].indices(batch_size)[0] for index in indices.values()})
  stops = sorted({index[0].indices(batch_size)[1] for index in indices.values()})
  if any(stop != start for stop, start in zip(stops, starts[1:])):
    raise ValueError(f"this process's devices hold rows {list(zip(starts, stops))} of the "
                     f"batch, not one block: order the mesh's devices by process")
  rows = stops[-1] - starts[0]
  return starts[0] // rows, batch_size // rows


def global_batch(batch: dict, mesh) -> dict:
  """A global array from this process's share of the batch (`data_shard`), split over 'data'.

  With one process the share is the whole batch.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def replicated_batch(batch: dict, mesh) -> dict:
  """A global array, split over 'data', from a whole batch that every process holds."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x, x.shape), batch)
