"""Stage-1 training: resume is exact, 8 fake devices match 1, NaNs stop, big FFNs freeze."""

import json
import os
import re
import shutil
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from adaptive_jax.train import checkpoint as ckpt_lib
from adaptive_jax.train.config import RoutingConfig, TrainConfig
from adaptive_jax.train.loop import train_and_evaluate
from adaptive_jax.train.metrics import read_metrics
from adaptive_jax.train.state import make_optimizer
from adaptive_jax.train.trained import load_trained
from configs import duo_tiny
from tests.fake_devices import run_on_8_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


def _config(data_dir, **train):
  config = duo_tiny.get_config()
  config.data.data_dir = data_dir
  config.train.num_steps = 8
  config.train.warmup_steps = 2
  config.train.lr_decay_steps = 8
  config.train.log_every = 1
  config.train.checkpoint_every = 2
  for key, value in train.items():
    config.train[key] = value
  return config


def _losses(workdir):
  return [row["train/loss"] for row in read_metrics(workdir)]


def test_resume_gives_identical_losses_and_results(data_dir, tmp_path):
  straight = train_and_evaluate(_config(data_dir), str(tmp_path / "straight"))
  half = _config(data_dir)
  half.train.num_steps = 4
  train_and_evaluate(half, str(tmp_path / "resumed"))
  # Same command again with num_steps=8 in the same workdir: resumes from step 4.
  resumed = train_and_evaluate(_config(data_dir), str(tmp_path / "resumed"))
  assert resumed == straight
  assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")
  assert len(_losses(tmp_path / "straight")) == 8
  with open(tmp_path / "resumed" / "results.json") as f:
    assert json.load(f) == straight


_SHARDED_RUN = textwrap.dedent("""
    import json, sys
    import jax
    assert jax.device_count() == 8, jax.devices()
    from adaptive_jax.train.loop import train_and_evaluate
    from adaptive_jax.train.metrics import read_metrics
    from tests.test_train import _config
    config = _config(sys.argv[1], mesh_shape=(4, 2))
    results = train_and_evaluate(config, sys.argv[2])
    print("RESULT" + json.dumps({"losses": [r["train/loss"] for r in read_metrics(sys.argv[2])],
                                 "results": results}))
""")


def test_sharded_training_on_8_devices_matches_1_device(data_dir, tmp_path):
  single = train_and_evaluate(_config(data_dir), str(tmp_path / "single"))
  stdout = run_on_8_devices(_SHARDED_RUN, data_dir, str(tmp_path / "sharded"), cwd=REPO)
  sharded = json.loads(stdout.split("RESULT", 1)[1])
  np.testing.assert_allclose(sharded["losses"], _losses(tmp_path / "single"), atol=1e-5, rtol=0)
  for key, value in single.items():
    if key.startswith("eval/"):
      np.testing.assert_allclose(sharded["results"][key], value, rtol=1e-5)


def test_nan_loss_stops_naming_the_step(data_dir, tmp_path):
  config = _config(data_dir, learning_rate=1e30, grad_clip=1e30)
  with pytest.raises(FloatingPointError, match=r"train/loss is (nan|inf) at step \d+"):
    train_and_evaluate(config, str(tmp_path / "nan"))


def _saved_params(workdir):
  """{step: params} of every checkpoint in `workdir`, read without a target structure."""
  folder = os.path.join(workdir, "checkpoints")
  steps = sorted(int(name) for name in os.listdir(folder) if name.isdigit())
  with ocp.StandardCheckpointer() as checkpointer:
    return {step: checkpointer.restore(os.path.join(folder, str(step), "state"))["params"]
            for step in steps}


def test_no_checkpoint_is_saved_from_an_unchecked_state(data_dir, tmp_path):
  # No log line before the end: only the saves' own check can stop the run in time.
  config = _config(data_dir, learning_rate=1e30, grad_clip=1e30, log_every=100)
  workdir = str(tmp_path / "nan")
  with pytest.raises(FloatingPointError, match=r"train/loss is (nan|inf) at step \d+|not saving"):
    train_and_evaluate(config, workdir)
  saved = _saved_params(workdir)
  assert max(saved, default=0) < config.train.num_steps  # it stopped before the end
  for step, params in saved.items():
    for leaf in jax.tree.leaves(params):
      assert np.all(np.isfinite(leaf)), f"checkpoint {step} holds NaN or inf"


def test_save_refuses_non_finite_params_naming_the_leaf(tmp_path):
  state = types.SimpleNamespace(params={"ok": jnp.ones(2), "w": jnp.array([1.0, jnp.nan])})
  with ckpt_lib.make_manager(str(tmp_path), max_to_keep=2) as manager:
    with pytest.raises(FloatingPointError, match=r"not saving checkpoint step 3: params \['w'\]"):
      ckpt_lib.save(manager, 3, state, data_iterator=None)
    assert manager.latest_step() is None
  assert ckpt_lib.nonfinite_leaves({"a": jnp.ones(2), "b": {"c": jnp.array(jnp.inf)}}) == [
      "['b']['c']"]


def test_too_few_eval_batches_fails_before_training(data_dir, tmp_path):
  config = _config(data_dir)
  config.eval.num_batches = 100_000
  with pytest.raises(ValueError, match=r"num_batches=100000"):
    train_and_evaluate(config, str(tmp_path / "short"))
  assert not (tmp_path / "short" / "checkpoints").exists()  # no step was trained


def test_freeze_big_after_stops_only_the_big_ffn():
  params = {"layers": {"duo_ffn": {"big": {"gate": jnp.ones((2, 3, 4))},
                                   "small": {"gate": jnp.ones((2, 3, 4))}},
                       "attention": {"query": jnp.ones((2, 3, 4))}}}
  tx = make_optimizer(TrainConfig(num_steps=10, warmup_steps=0, learning_rate=0.1),
                      RoutingConfig(freeze_big_after=2))
  opt_state = tx.init(params)
  history = [params]
  for i in range(4):
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(i), p.shape), params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
  big = [np.asarray(h["layers"]["duo_ffn"]["big"]["gate"]) for h in history]
  small = [np.asarray(h["layers"]["duo_ffn"]["small"]["gate"]) for h in history]
  assert not np.allclose(big[1], big[0]) and not np.allclose(big[2], big[1])
  np.testing.assert_array_equal(big[4], big[2])  # frozen from the third update on
  assert not np.allclose(small[4], small[3])


def _updates(tx, grads_per_step, params):
  """The update of every step when `tx` sees these gradients in turn."""
  opt_state, out = tx.init(params), []
  for grads in grads_per_step:
    updates, opt_state = tx.update(grads, opt_state, params)
    out.append(updates)
  return out


def test_freeze_big_after_clips_by_the_global_norm_of_all_gradients():
  # The big FFN's gradient norm swings (10, 0.01, 5, 0.1) while the rest's stays ~0.5: clipped
  # globally, the rest is scaled down at steps 1 and 3 only. Adam undoes a constant scale, not
  # a varying one, so clipping per branch (the rest alone never clips) gives other updates.
  params = {"duo_ffn": {"big": {"gate": jnp.ones((3, 4, 4))}, "small": {"gate": jnp.ones((4, 2))}},
            "attention": {"query": jnp.ones((4, 4))}}
  rng = np.random.default_rng(0)
  unit = lambda p: (p / np.linalg.norm(p)).astype(np.float32)
  grads_per_step = [
      {"duo_ffn": {"big": {"gate": scale * unit(rng.normal(size=(3, 4, 4)))},
                   "small": {"gate": 0.3 * unit(rng.normal(size=(4, 2)))}},
       "attention": {"query": 0.4 * unit(rng.normal(size=(4, 4)))}}
      for scale in (10.0, 0.01, 5.0, 0.1)]
  train_cfg = TrainConfig(num_steps=10, warmup_steps=0, learning_rate=0.1, grad_clip=1.0)
  free = _updates(make_optimizer(train_cfg, RoutingConfig()), grads_per_step, params)
  frozen = _updates(make_optimizer(train_cfg, RoutingConfig(freeze_big_after=2)), grads_per_step,
                    params)
  for step, (f, z) in enumerate(zip(free, frozen)):
    np.testing.assert_allclose(z["duo_ffn"]["small"]["gate"], f["duo_ffn"]["small"]["gate"],
                               rtol=1e-6, err_msg=f"step {step}")
    np.testing.assert_allclose(z["attention"]["query"], f["attention"]["query"], rtol=1e-6,
                               err_msg=f"step {step}")
    big_free, big_frozen = f["duo_ffn"]["big"]["gate"], z["duo_ffn"]["big"]["gate"]
    if step < 2:
      np.testing.assert_allclose(big_frozen, big_free, rtol=1e-6)
    else:
      np.testing.assert_array_equal(big_frozen, 0.0)


class _Killed(Exception):
  """Stands for the process being killed."""


def test_load_trained_rejects_an_unfinished_run_naming_the_steps(data_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  save = ckpt_lib.save

  def save_then_die_at_4(manager, step, state, data_iterator):
    save(manager, step, state, data_iterator)
    if step == 4:
      raise _Killed()

  monkeypatch.setattr(ckpt_lib, "save", save_then_die_at_4)
  with pytest.raises(_Killed):
    train_and_evaluate(_config(data_dir), workdir)  # num_steps=8, killed after step 4
  monkeypatch.setattr(ckpt_lib, "save", save)
  command = f"python -m experiments.train_duo --config=configs/duo_tiny.py --workdir={workdir}"
  with pytest.raises(ValueError, match=r"(?s)unfinished.*step 4 of train.num_steps=8.*"
                                       + re.escape(command)):
    load_trained(workdir, train_command=command)
  train_and_evaluate(_config(data_dir), workdir)  # the same command again finishes the run
  config, _, params = load_trained(workdir, train_command=command)
  assert config.train.num_steps == 8 and jax.tree.leaves(params)


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
  """A 2-step run (checkpoint at step 2); tests copy it before changing it."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  train_and_evaluate(_config(data_dir, num_steps=2), str(workdir))
  return workdir


def test_rerun_with_another_config_raises_before_touching_config_json(data_dir, finished_run,
                                                                      tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  saved = (workdir / "config.json").read_text()
  changed = _config(data_dir, num_steps=2, learning_rate=1e-3)
  changed.model.d_ff_small = 16
  with pytest.raises(ValueError, match=r"model.d_ff_small: 8 there, 16 now; "
                                       r"train.learning_rate: 0.003 there, 0.001 now"):
    train_and_evaluate(changed, str(workdir))
  assert (workdir / "config.json").read_text() == saved
  with pytest.raises(ValueError, match=r"train.num_steps \(1\) must be >= 2, the step of the "
                                       r"newest checkpoint"):
    train_and_evaluate(_config(data_dir, num_steps=1), str(workdir))
  assert (workdir / "config.json").read_text() == saved
  # Steps, logging and checkpointing may change on resume: this one continues to step 4.
  assert train_and_evaluate(_config(data_dir, num_steps=4, log_every=2), str(workdir))["step"] == 4


def test_corrupt_checkpoint_raises_naming_its_path_and_step(data_dir, finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  step_dir = workdir / "checkpoints" / "2"
  for path in (step_dir / "state").rglob("*"):
    if path.is_file():
      path.write_bytes(b"not a checkpoint")
  message = f"could not restore checkpoint step 2 from {re.escape(str(step_dir))}"
  with pytest.raises(ValueError, match=message):
    load_trained(str(workdir), train_command="python -m experiments.train_duo ...")
  with pytest.raises(ValueError, match=message):
    train_and_evaluate(_config(data_dir, num_steps=4), str(workdir))
