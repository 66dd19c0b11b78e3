"""Orbax checkpoints holding the train state and the grain data-iterator state together."""

import os

import grain
import orbax.checkpoint as ocp


def make_manager(workdir: str, *, max_to_keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator) -> None:
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)))


def restore_latest(manager: ocp.CheckpointManager, abstract_state, data_iterator):
  """Restores the newest checkpoint into `abstract_state`'s shardings and `data_iterator`.

  Returns the state, or None when the directory holds no checkpoint. A checkpoint that cannot
  be read raises an error naming its directory.
  """
  step = manager.latest_step()
  if step is None:
    return None
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
  except Exception as e:  # orbax raises many types; name the file the user must look at
    raise ValueError(f"could not restore checkpoint step {step} from {manager.directory}: "
                     f"{type(e).__name__}: {e}. Delete that step's folder to resume from an "
                     f"earlier one, or use a fresh --workdir.") from e
  return restored.state


def restore_params(manager: ocp.CheckpointManager, abstract_state):
  """The params of the newest checkpoint (the data-iterator item is left alone)."""
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))
  return restored.state.params
