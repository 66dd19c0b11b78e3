"""Sample pools on disk: the round trip, a killed build resumed, settings checked, the tokens
kept, and the compact copy without confidences."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptive_jax.sampler import adaptive, draws, pool_store
from adaptive_jax.sampler.adaptive import LoopConfig, StopRule
from adaptive_jax.tasks.byte_tokenizer import ByteTokenizer
from tests.test_adaptive import _live, _live_data

LIVE = _live(window=0)  # one LiveDraw: the jitted pool step compiles once for every build
Q, N, ROWS = 4, 6, 8  # 24 samples in chunks at 0, 8, 16
DTYPES = {"answers_QxN": np.int32, "scores_QxNxC": np.float32, "confidence_QxNxM": np.float32,
          "lengths_QxN": np.int32, "stopped_QxN": np.bool_, "prompt_len_Q": np.int32,
          "tokens_QxNxM": np.int32}


class Killed(Exception):
  pass


@pytest.fixture(scope="module")
def data():
  return _live_data()


@pytest.fixture(scope="module")
def pool(data):
  return draws.build_pool(LIVE, data, Q, N, rows=ROWS)


def _assert_pools_equal(got: draws.Pool, want: draws.Pool):
  for name in draws.Pool._fields:
    assert getattr(got, name).dtype == getattr(want, name).dtype, name
    np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def _files(folder) -> list[str]:
  return sorted(os.path.relpath(os.path.join(root, f), folder)
                for root, _, files in os.walk(folder) for f in files)


def _count_steps(monkeypatch, kill_after: int | None = None) -> list:
  """Counts the pool's decode calls; raises Killed instead of the call after `kill_after`."""
  step, calls = draws._pool_step, []

  def counted(*args):
    if kill_after is not None and len(calls) == kill_after:
      raise Killed
    calls.append(args[2])
    return step(*args)
  monkeypatch.setattr(draws, "_pool_step", counted)
  return calls


def _killed_build(monkeypatch, data, path, chunks: int):
  """A build with `path` killed after `chunks` chunks were drawn and written."""
  _count_steps(monkeypatch, kill_after=chunks)
  with pytest.raises(Killed):
    draws.build_pool(LIVE, data, Q, N, rows=ROWS, path=path)
  monkeypatch.undo()


def test_pool_holds_int32_tokens_padded_after_the_length(pool):
  for name, dtype in DTYPES.items():
    assert getattr(pool, name).dtype == dtype, name
  m = pool.tokens_QxNxM.shape[-1]
  assert pool.tokens_QxNxM.shape == pool.confidence_QxNxM.shape == (Q, N, m)
  past_QxNxM = np.arange(m) >= pool.lengths_QxN[..., None]
  assert (pool.tokens_QxNxM[past_QxNxM] == LIVE.dec.pad_id).all()
  assert (pool.tokens_QxNxM[~past_QxNxM] != LIVE.dec.pad_id).any()


def test_save_load_round_trip_keeps_every_field_and_dtype(pool, tmp_path):
  path = str(tmp_path / "pool.npz")
  extra = {"gold_Q": np.arange(Q, dtype=np.int64), "estimate_Q": np.linspace(0, 1, Q),
           "difficulty_Q": np.array([1, 2, 2, 3], np.int8), "answers_QxN": np.zeros(2)}
  pool_store.save_pool(path, pool, **extra)  # an extra named like a field does not collide
  loaded, loaded_extra = pool_store.load_pool(path)
  _assert_pools_equal(loaded, pool)
  assert loaded_extra.keys() == extra.keys()
  for name, x in extra.items():
    assert loaded_extra[name].dtype == x.dtype, name
    np.testing.assert_array_equal(loaded_extra[name], x, err_msg=name)
  with np.load(path) as saved:  # compact on disk: vocabulary 32, lengths <= 12
    assert saved["tokens_QxNxM"].dtype == np.uint8 and saved["lengths_QxN"].dtype == np.uint8
    assert saved["answers_QxN"].dtype == np.int32  # NO_ANSWER is int32's minimum
    assert saved["confidence_QxNxM"].dtype == np.float32
  assert os.listdir(tmp_path) == ["pool.npz"]  # no tmp left


@pytest.mark.parametrize("top, disk", [(31, np.uint8), (50_000, np.uint16), (70_000, np.int32)])
def test_tokens_are_stored_in_the_smallest_type_that_holds_them(pool, tmp_path, top, disk):
  path = str(tmp_path / "pool.npz")
  tokens_QxNxM = pool.tokens_QxNxM.copy()
  tokens_QxNxM[0, 0, 0] = top
  wide = pool._replace(tokens_QxNxM=tokens_QxNxM)
  pool_store.save_pool(path, wide)
  with np.load(path) as saved:
    assert saved["tokens_QxNxM"].dtype == disk
  _assert_pools_equal(pool_store.load_pool(path)[0], wide)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_tmp(pool, tmp_path, monkeypatch):
  path = str(tmp_path / "pool.npz")
  pool_store.save_pool(path, pool)
  before = open(path, "rb").read()

  def broken(f, **arrays):
    f.write(b"half a zip")
    raise Killed
  monkeypatch.setattr(np, "savez_compressed", broken)
  with pytest.raises(Killed):
    pool_store.save_pool(path, pool._replace(lengths_QxN=pool.lengths_QxN * 0))
  assert os.listdir(tmp_path) == ["pool.npz"] and open(path, "rb").read() == before


def test_bad_pools_and_extras_are_named(pool, tmp_path):
  path = str(tmp_path / "pool.npz")
  with pytest.raises(ValueError, match="Pool.lengths_QxN"):
    pool_store.save_pool(path, pool._replace(lengths_QxN=pool.lengths_QxN[:, :2]))
  with pytest.raises(ValueError, match="extra 'note'"):
    pool_store.save_pool(path, pool, note=np.array([{}], object))
  np.savez(path, answers_QxN=pool.answers_QxN)
  with pytest.raises(ValueError, match="pool fields"):
    pool_store.load_pool(path)


def test_a_killed_build_resumes_drawing_only_the_missing_chunks(pool, data, tmp_path,
                                                                 monkeypatch):
  path = str(tmp_path / "full" / "pool.npz")  # folders made as needed
  _killed_build(monkeypatch, data, path, chunks=2)
  assert _files(tmp_path) == ["full/pool.npz.parts/0.npz", "full/pool.npz.parts/8.npz"]
  (tmp_path / "full" / "pool.npz.parts" / "16.npz.tmp").write_bytes(b"a write cut short")
  calls = _count_steps(monkeypatch)
  resumed = draws.build_pool(LIVE, data, Q, N, rows=ROWS, path=path)
  assert len(calls) == 1  # only chunk 16: questions 2 and 3, samples 4 and 5 and on
  np.testing.assert_array_equal(calls[0], [2, 2, 3, 3, 3, 3, 3, 3])
  _assert_pools_equal(resumed, pool)
  assert _files(tmp_path) == ["full/pool.npz"]  # parts and the stale tmp deleted
  # A finished pool is loaded without drawing and carries its settings.
  _assert_pools_equal(draws.build_pool(LIVE, data, Q, N, rows=ROWS, path=path), pool)
  assert len(calls) == 1
  assert int(pool_store.load_pool(path)[1]["build_rows"]) == ROWS


def test_a_build_killed_before_its_final_write_draws_nothing(pool, data, tmp_path, monkeypatch):
  path = str(tmp_path / "pool.npz")
  save_pool = pool_store.save_pool

  def killed(*args, **kwargs):
    raise Killed
  monkeypatch.setattr(pool_store, "save_pool", killed)
  with pytest.raises(Killed):
    draws.build_pool(LIVE, data, Q, N, rows=ROWS, path=path)
  monkeypatch.setattr(pool_store, "save_pool", save_pool)
  assert _files(tmp_path) == [f"pool.npz.parts/{s}.npz" for s in (0, 16, 8)]
  calls = _count_steps(monkeypatch)
  _assert_pools_equal(draws.build_pool(LIVE, data, Q, N, rows=ROWS, path=path), pool)
  assert not calls and _files(tmp_path) == ["pool.npz"]


def test_a_build_with_a_path_equals_one_without(pool, data, tmp_path, monkeypatch):
  calls = _count_steps(monkeypatch)
  path = str(tmp_path / "pool.npz")
  _assert_pools_equal(draws.build_pool(LIVE, data, Q, N, rows=ROWS, path=path), pool)
  assert len(calls) == 3
  _assert_pools_equal(pool_store.load_pool(path)[0], pool)


def _other_prompts(data):
  prompts = data["prompts"]
  return {**data, "prompts": prompts._replace(prompt_QxP=prompts.prompt_QxP.at[0, -1].add(1))}


CHANGES = {
    "rows": (lambda d: (LIVE, d, Q, N, 4), "rows: 8 there, 4 now"),
    "num_questions": (lambda d: (LIVE, d, 3, N, ROWS), "num_questions: 4 there, 3 now"),
    "n": (lambda d: (LIVE, d, Q, 5, ROWS), "n: 6 there, 5 now"),
    "decode": (lambda d: (_live(window=3), d, Q, N, ROWS), "decode: DecodeConfig"),
    "key": (lambda d: (LIVE, {**d, "key": jax.random.key(6)}, Q, N, ROWS), r"key: \[0 5\]"),
    "prompts": (lambda d: (LIVE, _other_prompts(d), Q, N, ROWS), "prompts: "),
    # Another policy (a retrained one): its pool is never taken for this one's.
    "policy": (lambda d: (LIVE, {**d, "policy": jax.tree.map(lambda x: x + 1e-3, d["policy"])},
                          Q, N, ROWS), "policy: "),
}


@pytest.mark.parametrize("finished", [False, True], ids=["parts", "finished"])
@pytest.mark.parametrize("change", CHANGES)
def test_resuming_with_other_settings_names_them(data, tmp_path, monkeypatch, change, finished):
  path = str(tmp_path / "pool.npz")
  if finished:
    draws.build_pool(LIVE, data, Q, N, rows=ROWS, path=path)
  else:
    _killed_build(monkeypatch, data, path, chunks=1)
  args, message = CHANGES[change]
  live, other_data, num_questions, n, rows = args(data)
  calls = _count_steps(monkeypatch)
  with pytest.raises(ValueError, match=message) as raised:
    draws.build_pool(live, other_data, num_questions, n, rows=rows, path=path)
  assert not calls
  others = {"rows", "num_questions", "n", "decode", "key", "prompts", "policy", "scorer"} - {change}
  assert not any(f"{name}: " in str(raised.value).replace("build_", "") for name in others)


def _scaled_score(scorer, tokens_BxT, prompt_len_B, length_B):
  frac_B = jnp.sum(tokens_BxT > 10, -1) / (prompt_len_B + length_B)
  return jnp.stack([frac_B * scorer["scale"], 1 - frac_B], -1)


SCALED = dataclasses.replace(LIVE, score_fn=_scaled_score)
_scale = lambda data, s: {**data, "scorer": {"scale": jnp.float32(s)}}


def test_a_finished_pool_of_another_scorer_is_rescored_not_redrawn(data, tmp_path, monkeypatch):
  path = str(tmp_path / "pool.npz")
  old = draws.build_pool(SCALED, _scale(data, 0.5), Q, N, rows=ROWS, path=path)
  fresh = draws.build_pool(SCALED, _scale(data, 0.25), Q, N, rows=ROWS)  # drawn, no file
  assert not np.allclose(old.scores_QxNxC[..., 0], fresh.scores_QxNxC[..., 0])
  calls = _count_steps(monkeypatch)
  rescored = draws.build_pool(SCALED, _scale(data, 0.25), Q, N, rows=ROWS, path=path)
  assert not calls  # nothing decoded
  np.testing.assert_allclose(rescored.scores_QxNxC, fresh.scores_QxNxC, rtol=1e-6)
  for name in set(draws.Pool._fields) - {"scores_QxNxC"}:
    np.testing.assert_array_equal(getattr(rescored, name), getattr(fresh, name), err_msg=name)
  # The file now holds the new scorer's scores: read back with it, nothing is rescored.
  monkeypatch.setattr(draws, "rescore_pool", lambda *a, **k: pytest.fail("rescored again"))
  again = draws.build_pool(SCALED, _scale(data, 0.25), Q, N, rows=ROWS, path=path)
  np.testing.assert_array_equal(again.scores_QxNxC, rescored.scores_QxNxC)


def test_an_unfinished_pool_of_another_scorer_is_not_resumed(data, tmp_path, monkeypatch):
  path = str(tmp_path / "pool.npz")
  _killed_build(monkeypatch, _scale(data, 0.5), path, chunks=1)
  with pytest.raises(ValueError, match="scorer: ") as raised:
    draws.build_pool(SCALED, _scale(data, 0.25), Q, N, rows=ROWS, path=path)
  assert "policy: " not in str(raised.value)


def test_tokens_decode_to_the_live_samplers_text(pool, data):
  question_B, slot_B = np.array([3, 0, 2, 1, 3]), np.array([5, 0, 3, 2, 1])
  out = jax.tree.map(np.asarray, LIVE.sample(data, jnp.asarray(question_B), jnp.asarray(slot_B),
                                             jnp.full(5, -jnp.inf)))
  tokenizer, texts = ByteTokenizer(), []
  for b, (q, s) in enumerate(zip(question_B, slot_B)):
    length = pool.lengths_QxN[q, s]
    assert length == out.lengths_B[b]
    np.testing.assert_array_equal(pool.tokens_QxNxM[q, s], out.tokens_BxM[b])
    texts.append(tokenizer.decode(pool.tokens_QxNxM[q, s, :length]))
    assert texts[-1] == tokenizer.decode(out.tokens_BxM[b, :out.lengths_B[b]])
  assert any(texts)


@pytest.mark.parametrize("rule", [StopRule(), StopRule("adaptive_consistency", threshold=0.6)],
                         ids=["fixed", "adaptive_consistency"])
def test_a_pool_without_confidences_replays_rules_that_read_none(pool, tmp_path, rule):
  slim = pool_store.drop_confidences(pool)
  assert slim.confidence_QxNxM.shape == (Q, N, 1) and not slim.confidence_QxNxM.any()
  pool_store.save_pool(str(tmp_path / "slim.npz"), slim)
  pool_store.save_pool(str(tmp_path / "full.npz"), pool)
  assert os.path.getsize(tmp_path / "slim.npz") < os.path.getsize(tmp_path / "full.npz")
  replay = draws.PoolDraw(confidence_window=0, group_window=4)
  loop = LoopConfig(n_max=N, per_round=2, rows=4, num_channels=2)
  target_Q = np.array([6, 6, 4, 6])
  run = lambda p: jax.tree.map(np.asarray, adaptive.run(replay, {"pool": p, "score_cost": 1},
                                                        target_Q, rule=rule, loop=loop))
  full, cut = run(pool), run(pool_store.load_pool(str(tmp_path / "slim.npz"))[0])
  for name in ("drawn_Q", "answers_QxN", "truncated_QxN", "tokens_Q", "scored_tokens_Q",
               "rounds_Q", "scores_QxNxC"):
    np.testing.assert_array_equal(getattr(cut, name), getattr(full, name), err_msg=name)


def test_call_rows_is_the_next_power_of_two_within_rows():
  assert [draws.call_rows(p, 128) for p in (1, 8, 9, 16, 17, 64, 65, 128)] == [
      8, 8, 16, 16, 32, 64, 128, 128]
  assert draws.call_rows(3, 4) == 4 and draws.call_rows(200, 128) == 128


def test_a_short_call_runs_fewer_rows_and_draws_the_pool_samples(data, pool, monkeypatch):
  calls = _count_steps(monkeypatch)
  question_P, slot_P = np.array([3, 0, 2]), np.array([5, 1, 0])
  out = draws.draw_pairs(LIVE, data, question_P, slot_P, rows=64)
  assert [len(question_B) for question_B in calls] == [8]  # not 64
  np.testing.assert_array_equal(out["answers_B"], pool.answers_QxN[question_P, slot_P])
  np.testing.assert_array_equal(out["tokens_BxM"], pool.tokens_QxNxM[question_P, slot_P])
  np.testing.assert_allclose(out["scores_BxC"], pool.scores_QxNxC[question_P, slot_P], rtol=1e-5)
