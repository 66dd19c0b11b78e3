"""Orbax checkpoints holding the train state and the grain data-iterator state together."""

import os

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


def make_manager(workdir: str, *, max_to_keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_names=("state", "data"))


def nonfinite_leaves(params) -> list[str]:
  """Paths of the leaves of `params` holding a NaN or an infinity."""
  finite = jax.jit(lambda p: jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), p))(params)
  return [jax.tree_util.keystr(path)
          for path, ok in jax.tree_util.tree_flatten_with_path(finite)[0] if not bool(ok)]


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator) -> None:
  """Saves `state` and the iterator as checkpoint `step`; raises, saving nothing, if the
  state's params hold a NaN or an infinity (a resume would start from a diverged state)."""
  bad = nonfinite_leaves(state.params)
  if bad:
    raise FloatingPointError(f"not saving checkpoint step {step}: params {', '.join(bad[:5])}"
                             f"{' ...' if len(bad) > 5 else ''} hold NaN or inf. Lower "
                             "train.learning_rate or check the data.")
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)))


def latest_step(workdir: str) -> int | None:
  """The newest checkpoint's step in `workdir`, or None; creates no folder."""
  if not os.path.isdir(os.path.join(os.path.abspath(workdir), "checkpoints")):
    return None
  with make_manager(workdir, max_to_keep=1) as manager:
    return manager.latest_step()


def _restore(manager: ocp.CheckpointManager, step: int, args: ocp.args.Composite):
  try:
    return manager.restore(step, args=args)
  except Exception as e:  # orbax raises many types; name the folder the user must look at
    path = os.path.join(str(manager.directory), str(step))
    raise ValueError(f"could not restore checkpoint step {step} from {path}: "
                     f"{type(e).__name__}: {e}. Delete that folder to resume from an earlier "
                     f"step, or use a fresh --workdir.") from e


def restore_latest(manager: ocp.CheckpointManager, abstract_state, data_iterator):
  """Restores the newest checkpoint into `abstract_state`'s shardings and `data_iterator`.

  Returns the state, or None when the directory holds no checkpoint. A checkpoint that cannot
  be read raises a ValueError naming its folder and step.
  """
  step = manager.latest_step()
  if step is None:
    return None
  return _restore(manager, step, ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(data_iterator))).state


def restore_params(manager: ocp.CheckpointManager, abstract_state):
  """The params of the newest checkpoint (the data-iterator item is left alone)."""
  step = manager.latest_step()
  return _restore(manager, step, ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state))).state.params
