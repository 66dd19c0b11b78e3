"""Stage-1 training: resume is exact, 8 fake devices match 1, NaNs stop, big FFNs freeze."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adaptive_jax.train.config import RoutingConfig, TrainConfig
from adaptive_jax.train.loop import train_and_evaluate
from adaptive_jax.train.metrics import read_metrics
from adaptive_jax.train.state import make_optimizer
from configs import duo_tiny

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
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
  proc = subprocess.run([sys.executable, "-c", _SHARDED_RUN, data_dir, str(tmp_path / "sharded")],
                        env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  sharded = json.loads(proc.stdout.split("RESULT", 1)[1])
  np.testing.assert_allclose(sharded["losses"], _losses(tmp_path / "single"), atol=1e-5, rtol=0)
  for key, value in single.items():
    if key.startswith("eval/"):
      np.testing.assert_allclose(sharded["results"][key], value, rtol=1e-5)


def test_nan_loss_stops_naming_the_step(data_dir, tmp_path):
  config = _config(data_dir, learning_rate=1e30, grad_clip=1e30)
  with pytest.raises(FloatingPointError, match=r"train/loss is (nan|inf) at step \d+"):
    train_and_evaluate(config, str(tmp_path / "nan"))


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
