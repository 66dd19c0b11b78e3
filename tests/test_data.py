"""Tests for adaptive_jax.data: the Shakespeare builder, the tokenizer, the grain pipelines."""

import dataclasses
import os
import pickle
import re
import subprocess
import sys
import textwrap

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from adaptive_jax import data

_VALIDATION_PLAYS = {"a-midsummer-night-s-dream", "hamlet", "julius-caesar", "pericles",
                     "the-tempest"}


@pytest.fixture(scope="session")
def cfg(tmp_path_factory):
  return data.DataConfig(data_dir=str(tmp_path_factory.mktemp("data")), vocab_size=512,
                         seq_len=32, batch_size=4, seed=0)


@pytest.fixture(scope="session")
def tokenizer(cfg):
  return data.prepare(cfg)


@pytest.fixture(scope="session")
def sources(cfg, tokenizer):
  del tokenizer  # Only for the side effect: the dataset is built.
  return tfds.data_source("shakespeare_plays", data_dir=cfg.data_dir, download=False)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["targets"], b["targets"])


def test_splits_hold_disjoint_plays(sources):
  plays = {split: {ex["play"].decode() for ex in src} for split, src in sources.items()}
  assert plays["validation"] == _VALIDATION_PLAYS
  assert not plays["train"] & plays["validation"]
  assert len(plays["train"] | plays["validation"]) == 38
  genres = {ex["genre"].decode() for ex in sources["train"]}
  assert genres == {"comedies", "histories", "problems", "roman", "romances", "tragedies"}


def test_examples_are_plain_text_chunks(sources):
  texts = [ex["text"].decode() for ex in sources["validation"]]
  assert any("HAMLET:\nTo be, or not to be: that is the question:\nWhether 'tis nobler" in t
             for t in texts)
  for text in texts:
    assert not re.search(r"\*|_|\\|^#", text, re.MULTILINE), text
    assert len(text) < 5000
  assert 1500 < np.median([len(t) for t in texts]) < 2500


def test_tokenizer_round_trips(cfg, tokenizer, sources):
  assert tokenizer.vocab_size == cfg.vocab_size
  assert len({tokenizer.eos_id, tokenizer.bos_id, tokenizer.pad_id}) == 3
  sample = list(sources["validation"])[::10]
  lines = [line for ex in sample for line in ex["text"].decode().split("\n")]
  lines += ["  two  leading spaces,\ttabs\tand unseen characters: ß ∑ 😀 ", ""]
  for line in lines:
    assert tokenizer.decode(tokenizer.encode(line)) == line
  text = sources["validation"][0]["text"].decode()
  assert tokenizer.decode(tokenizer.encode(text)) == text
  assert len(tokenizer.encode(text)) < len(text) / 1.5  # BPE merges, not bytes.


def test_tokenizer_pickles_and_prepare_loads_it(cfg, tokenizer):
  clone = pickle.loads(pickle.dumps(tokenizer))
  assert clone == tokenizer and clone.encode("Exeunt") == tokenizer.encode("Exeunt")
  assert data.prepare(cfg) == tokenizer  # Loaded from <data_dir>/shakespeare_spm512.model.


def test_train_batches_are_shifted_windows(cfg, tokenizer):
  batches = _take(data.make_train_iterator(cfg, tokenizer), 20)
  for batch in batches:
    assert set(batch) == {"inputs", "targets"}
    for x in batch.values():
      assert x.shape == (cfg.batch_size, cfg.seq_len) and x.dtype == np.int32
    np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])
  tokens = np.stack([b["inputs"] for b in batches])
  assert tokens.min() >= 0 and tokens.max() < cfg.vocab_size
  assert (tokens == tokenizer.eos_id).any()  # Documents are packed, EOS between them.
  assert not (tokens == tokenizer.pad_id).any()


def test_same_seed_same_batches_other_seed_differs(cfg, tokenizer):
  first = _take(data.make_train_iterator(cfg, tokenizer), 3)
  _assert_same(first, _take(data.make_train_iterator(cfg, tokenizer), 3))
  other = _take(data.make_train_iterator(dataclasses.replace(cfg, seed=1), tokenizer), 3)
  assert not np.array_equal(first[0]["inputs"], other[0]["inputs"])


def test_get_state_set_state_resumes(cfg, tokenizer):
  it = data.make_train_iterator(cfg, tokenizer)
  _take(it, 5)
  state = it.get_state()
  expected = _take(it, 3)
  resumed = data.make_train_iterator(cfg, tokenizer)
  resumed.set_state(state)
  _assert_same(expected, _take(resumed, 3))


def test_orbax_checkpoint_resumes(cfg, tokenizer, tmp_path):
  it = data.make_train_iterator(cfg, tokenizer)
  _take(it, 7)
  with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as manager:
    manager.save(7, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
  expected = _take(it, 3)
  resumed = data.make_train_iterator(cfg, tokenizer)
  with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as manager:
    manager.restore(7, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  _assert_same(expected, _take(resumed, 3))


def test_worker_processes_give_the_same_batches(cfg, tokenizer):
  # One worker process reads the same examples in the same order as no worker.
  it = data.make_train_iterator(dataclasses.replace(cfg, worker_count=1), tokenizer)
  try:
    _assert_same(_take(it, 3), _take(data.make_train_iterator(cfg, tokenizer), 3))
  finally:
    it.close()


def test_eval_batches_are_deterministic(cfg, tokenizer):
  batches = data.make_eval_batches(cfg, tokenizer, "validation", num_batches=5)
  _assert_same(batches, data.make_eval_batches(cfg, tokenizer, num_batches=5))
  assert batches[0]["inputs"].shape == (cfg.batch_size, cfg.seq_len)
  # Eval reads the split in file order: a longer list starts with the same batches.
  _assert_same(batches, data.make_eval_batches(cfg, tokenizer, num_batches=8)[:5])
  with pytest.raises(ValueError, match=r"holds only \d+ batches .* num_batches=100000"):
    data.make_eval_batches(cfg, tokenizer, num_batches=100_000)


@pytest.mark.parametrize("field, value", [
    ("name", "wikipedia"), ("data_dir", ""), ("vocab_size", 256), ("seq_len", 0),
    ("batch_size", -4), ("seed", -1), ("worker_count", -1), ("text_key", ""),
])
def test_bad_config_names_the_field(cfg, field, value):
  with pytest.raises(ValueError, match=f"data.{field}"):
    dataclasses.replace(cfg, **{field: value})


def test_bad_name_lists_allowed_values(cfg):
  with pytest.raises(ValueError, match=r"\('shakespeare', 'python_stdlib', 'lm1b', 'c4'\), got 'x'"):
    dataclasses.replace(cfg, name="x")


def test_config_expands_home_dir(cfg):
  assert dataclasses.replace(cfg, data_dir="~/x").data_dir == os.path.expanduser("~/x")


def test_pipeline_runs_without_tensorflow(tmp_path):
  # A meta-path finder that "finds" tensorflow but fails to load it: like a broken install.
  # (sys.modules["tensorflow"] = None is no good: tfds then believes TF is loaded.)
  script = textwrap.dedent(f"""
      import importlib.abc, importlib.machinery, sys

      class BlockTensorflow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
          if name.split(".")[0] == "tensorflow":
            return importlib.machinery.ModuleSpec(name, self)
        def create_module(self, spec):
          raise ImportError(f"{{spec.name}} is blocked")
        def exec_module(self, module):
          pass

      sys.meta_path.insert(0, BlockTensorflow())
      try:
        import tensorflow
        raise SystemExit("tensorflow imported")
      except ImportError:
        pass
      from adaptive_jax import data
      cfg = data.DataConfig(data_dir={str(tmp_path)!r}, vocab_size=384, seq_len=16,
                            batch_size=2, seed=0)
      batch = next(data.make_train_iterator(cfg, data.prepare(cfg)))
      assert batch["inputs"].shape == (2, 16), batch
      assert "tensorflow" not in sys.modules
      print("OK")
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith("OK")


def test_python_stdlib_domain_builds_and_round_trips(cfg, tokenizer):
  """The held-out code domain: this interpreter's stdlib, read with the Shakespeare tokenizer."""
  code = dataclasses.replace(cfg, name="python_stdlib")
  builder = data.prepare_dataset(code)
  assert builder.info.splits["validation"].num_examples > 500
  source = builder.as_data_source(split="validation")
  text = source[0]["text"].decode("utf-8")
  assert tokenizer.decode(tokenizer.encode(text)) == text  # byte fallback: nothing lost
  batches = data.make_eval_batches(code, tokenizer, num_batches=2)
  assert batches[0]["inputs"].shape == (code.batch_size, code.seq_len)
  assert sum("def " in source[i]["text"].decode() for i in range(50)) > 10
