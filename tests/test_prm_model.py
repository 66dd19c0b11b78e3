"""PRM: reads the prefix up to its last real token, calibrated outputs start at the base,
adapters train what they name, the mean and the quantiles fit what they should."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adaptive_jax.nn import lora
from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.prm import fit, metrics
from adaptive_jax.prm.model import MEAN, PRM, encode_records, encode_texts, last_real_index

CFG = ModelConfig(vocab_size=259, num_layers=2, d_model=32, num_heads=2, head_dim=16,
                  d_ff_big=64, d_ff_small=0, max_len=32, duo=False)
TEXTS = ["ab\n", "Q: 3+4\n7\n", "dcba\n", "a\n"]


def _records(seed, n, label_rates):
  """Half the texts contain 'x': MC target rate 0.9 with 'x', 0.2 without (8 rollouts);
  `response_correct` is drawn at `label_rates` (x, no x), the rates of some other policy."""
  rng = np.random.default_rng(seed)
  records = []
  for i in range(n):
    chars = list(rng.choice(list("abcd"), rng.integers(3, 9)))
    has_x = i % 2 == 0
    if has_x:
      chars[rng.integers(len(chars))] = "x"
    rate, label_rate = (0.9, label_rates[0]) if has_x else (0.2, label_rates[1])
    correct = int(rng.binomial(8, rate))
    records.append({"question_id": i, "difficulty": int(has_x), "response_id": 0, "step": 0,
                    "text": "".join(chars) + "\n", "num_rollouts": 8, "rollouts_correct": correct,
                    "target": correct / 8, "response_correct": bool(rng.random() < label_rate)})
  return records


@pytest.fixture(scope="module")
def model_and_params():
  model = PRM(CFG)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  return jax.jit(model.apply), params


def test_encoding_puts_eos_first_and_pads_on_the_right():
  tokens_NxT = encode_texts(["ab\n", "a\n"], max_len=8)
  np.testing.assert_array_equal(tokens_NxT, [[2, 100, 101, 13], [2, 100, 13, 0]])
  np.testing.assert_array_equal(last_real_index(jnp.asarray(tokens_NxT)), [3, 2])


def test_head_reads_the_prefix_up_to_the_last_real_token(model_and_params):
  apply, params = model_and_params
  tokens_NxT = encode_texts(TEXTS, CFG.max_len)
  out_Nx1 = apply({"params": params}, tokens_NxT)
  # Each row alone, unpadded, gives its batched output: pads after the end are never seen.
  for i, text in enumerate(TEXTS):
    alone_1x1 = apply({"params": params}, encode_texts([text], CFG.max_len))
    np.testing.assert_allclose(alone_1x1[0], out_Nx1[i], rtol=1e-5, atol=1e-6)
  # Any tokens after the boundary (here random bytes, wider than before) change nothing.
  last_N = last_real_index(jnp.asarray(tokens_NxT))
  noise_NxT = np.random.default_rng(0).integers(3, 259, (len(TEXTS), tokens_NxT.shape[1] + 5))
  after_NxT = np.arange(noise_NxT.shape[1])[None, :] > np.asarray(last_N)[:, None]
  garbage_NxT = np.where(after_NxT, noise_NxT, np.pad(tokens_NxT, ((0, 0), (0, 5))))
  np.testing.assert_allclose(apply({"params": params}, garbage_NxT, last_N), out_Nx1,
                             rtol=1e-5, atol=1e-6)


def test_position_readout_is_the_readout_of_each_prefix(model_and_params):
  _, params = model_and_params
  tokens_1xT = encode_texts([TEXTS[1]], CFG.max_len)
  positions_1xL = jnp.array([[2, 5, 7, tokens_1xT.shape[1] - 1]])
  model = PRM(CFG)
  got_1xLxF = model.apply({"params": params}, tokens_1xT, positions_1xL,
                          method=PRM.position_readout)
  for k, t in enumerate(np.asarray(positions_1xL[0])):
    cut_1xF = model.apply({"params": params}, tokens_1xT[:, :t + 1], method=PRM.readout)
    np.testing.assert_allclose(got_1xLxF[0, k], cut_1xF[0], rtol=1e-5, atol=1e-6)


def test_calibrated_outputs_start_at_the_base_probability():
  records = _records(0, 6, (0.5, 0.5))
  base, _ = fit.train_base_prm(records, CFG, steps=0, batch_size=4, learning_rate=1e-3, seed=3)
  calibrated, _ = fit.calibrate_prm(base, records, CFG, steps=0, batch_size=4,
                                    learning_rate=1e-3, seed=0)
  # The head reads [h_last; h_mean]; three quantiles, then the mean.
  assert calibrated["delta"]["kernel"].shape == (2 * CFG.d_model, 4)
  base_Nx1 = fit.predict(base, CFG, records, batch_size=4)
  outputs_NxK = fit.predict(calibrated, CFG, records, batch_size=4)
  assert base_Nx1.shape == (6, 1) and outputs_NxK.shape == (6, 4)
  np.testing.assert_array_equal(outputs_NxK, np.repeat(base_Nx1, 4, axis=1))
  assert base_Nx1.std() > 0  # a real check: outputs differ across records


def _same(a, b):
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, b)))


def test_adapters_train_what_they_name():
  records = _records(1, 16, (0.5, 0.5))
  base, _ = fit.train_base_prm(records, CFG, steps=0, batch_size=8, learning_rate=1e-3, seed=0)
  kwargs = dict(steps=2, batch_size=8, learning_rate=1e-2, seed=0)
  head, _ = fit.calibrate_prm(base, records, CFG, **kwargs)
  low_rank, _ = fit.calibrate_prm(base, records, CFG, adapter="lora", lora_rank=2, **kwargs)
  full, _ = fit.calibrate_prm(base, records, CFG, adapter="full", **kwargs)
  for tuned in (head, low_rank):
    assert _same(tuned["backbone"]["embed"], base["backbone"]["embed"])
    assert _same(tuned["head"], base["head"])
    assert not _same(tuned["delta"], jax.tree.map(jnp.zeros_like, tuned["delta"]))
  assert _same(head["backbone"], base["backbone"])  # the head alone trains
  assert not _same(low_rank["backbone"]["final_norm"], base["backbone"]["final_norm"])
  assert not _same(full["backbone"]["layers"], base["backbone"]["layers"])
  assert not _same(full["backbone"]["embed"], base["backbone"]["embed"])
  # LoRA moved every attention and FFN kernel by a matrix of rank <= 2 per layer (in x out).
  for name, num_in in lora.INPUT_AXES.items():
    group = "attention" if name in ("query", "key", "value", "out") else "ffn"
    w, tuned = base["backbone"]["layers"][group][name], low_rank["backbone"]["layers"][group][name]
    delta = np.asarray(tuned - w, np.float64)
    assert np.abs(delta).max() > 0, name
    for l in range(CFG.num_layers):
      matrix = delta[l].reshape(int(np.prod(w.shape[1:1 + num_in])), -1)
      # Singular values past the second are float32 rounding of W + AB - W: far below the first.
      singular = np.linalg.svd(matrix, compute_uv=False)
      assert singular[2] < 1e-3 * singular[0], (name, singular[:4])
  assert _same(low_rank["backbone"]["layers"]["attention_norm"],
               base["backbone"]["layers"]["attention_norm"])
  with pytest.raises(ValueError, match="adapter must be one of"):
    fit.calibrate_prm(base, records, CFG, adapter="qlora", **kwargs)


def test_head_adapter_on_cached_features_equals_training_through_the_model():
  """Reference: the same steps taken through the whole model, all but delta and base_gain frozen."""
  records = _records(3, 24, (0.5, 0.5))
  base, _ = fit.train_base_prm(records, CFG, steps=0, batch_size=8, learning_rate=1e-3, seed=0)
  steps, batch_size, lr, seed = 4, 8, 1e-2, 5
  tuned, _ = fit.calibrate_prm(base, records, CFG, steps=steps, batch_size=batch_size,
                               learning_rate=lr, seed=seed)
  model = PRM(CFG, 3)
  tokens_NxT = jnp.asarray(encode_records(records, CFG.max_len))
  targets_N = jnp.asarray([r["target"] for r in records], jnp.float32)
  levels_Q = jnp.asarray([0.1, 0.5, 0.9])
  delta = {name: jax.tree.map(jnp.zeros_like, tuned[name]) for name in ("delta", "base_gain")}

  def loss(delta, idx_B):
    q_BxQ, mean_B = model.apply({"params": {**base, **delta}}, tokens_NxT[idx_B])
    y_B = targets_N[idx_B]
    u_BxQ = y_B[:, None] - jax.nn.sigmoid(q_BxQ)
    pinball = jnp.mean(jnp.maximum(levels_Q * u_BxQ, (levels_Q - 1) * u_BxQ))
    return pinball + jnp.mean((mean_B - y_B) ** 2)

  # The rate decays on a cosine from lr at step 0 to 0 at step `steps`.
  rates = [lr * 0.5 * (1 + np.cos(np.pi * i / steps)) for i in range(steps)]
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(lambda i: jnp.asarray(rates)[i], weight_decay=0.0))
  opt_state = tx.init(delta)
  batch_key = jax.random.split(jax.random.key(seed))[0]
  for i in range(steps):
    idx_B = jax.random.randint(jax.random.fold_in(batch_key, i), (batch_size,), 0, len(records))
    updates, opt_state = tx.update(jax.grad(loss)(delta, idx_B), opt_state, delta)
    delta = optax.apply_updates(delta, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               {name: tuned[name] for name in delta}, delta)
  assert np.abs(np.asarray(delta["delta"]["kernel"])).max() > 1e-3  # it moved
  assert abs(float(delta["base_gain"])) > 1e-3


def test_base_prm_adapters_train_what_they_name():
  records = _records(1, 16, (0.5, 0.5))
  kwargs = dict(records=records, model_cfg=CFG, batch_size=8, learning_rate=1e-2, seed=0)
  init, _ = fit.train_base_prm(steps=0, **kwargs)
  head, _ = fit.train_base_prm(steps=2, adapter="head", **kwargs)
  full, _ = fit.train_base_prm(steps=2, **kwargs)  # the default: public PRMs train everything
  assert not _same(head["head"], init["head"])
  assert _same(head["backbone"], init["backbone"])
  assert not _same(full["backbone"]["layers"], init["backbone"]["layers"])
  with pytest.raises(ValueError, match="adapter must be one of"):
    fit.train_base_prm(steps=1, adapter="qlora", **kwargs)


def test_mean_output_fits_the_mean_where_the_median_differs():
  # With 'x' a record's target is 1 with probability 0.3, else 0 (mean 0.3, median 0); without
  # 'x', 1 with probability 0.8 (median 1). The Brier-optimal prediction is the mean.
  records = _records(2, 512, (0.99, 0.7))
  rng = np.random.default_rng(0)
  for r in records:
    r["target"] = float(rng.random() < (0.3 if "x" in r["text"] else 0.8))
  has_x_N = np.array(["x" in r["text"] for r in records])
  targets_N = np.array([r["target"] for r in records])
  # A base PRM that has learned to see 'x' (from its labels), then the head alone calibrates.
  base, _ = fit.train_base_prm(records, CFG, steps=200, batch_size=32, learning_rate=3e-3, seed=0)
  calibrated, _ = fit.calibrate_prm(base, records, CFG, steps=500, batch_size=128,
                                    learning_rate=3e-3, seed=0)
  out_NxK = fit.predict(calibrated, CFG, records)
  for group in (has_x_N, ~has_x_N):  # the mean output matches each group's success rate
    assert abs(out_NxK[group, MEAN].mean() - targets_N[group].mean()) < 0.05
  assert out_NxK[has_x_N, 1].mean() < 0.1 and out_NxK[~has_x_N, 1].mean() > 0.9  # medians
  assert metrics.brier(out_NxK[:, MEAN], targets_N) < metrics.brier(out_NxK[:, 1], targets_N) - 0.05


@pytest.mark.parametrize("adapter", ["head", "lora"])
def test_base_training_and_quantile_calibration_on_a_synthetic_feature(adapter):
  # The base PRM learns from an overconfident policy's outcomes (0.99 / 0.7 success with / without
  # 'x'); the MC targets of the target policy are 0.9 / 0.2.
  records = _records(0, 512, (0.99, 0.7))
  labels_N = np.array([r["response_correct"] for r in records], np.float64)
  targets_N = np.array([r["target"] for r in records])
  has_x_N = np.array(["x" in r["text"] for r in records])
  kwargs = dict(batch_size=32, learning_rate=3e-3, seed=0)
  bce = lambda p_N: -np.mean(labels_N * np.log(p_N) + (1 - labels_N) * np.log1p(-p_N))

  init_N = fit.predict(fit.train_base_prm(records, CFG, steps=0, **kwargs)[0], CFG,
                       records)[:, 0]
  base, _ = fit.train_base_prm(records, CFG, steps=200, **kwargs)
  base_N = fit.predict(base, CFG, records)[:, 0]
  # The label entropy (H(0.99) + H(0.7)) / 2 = 0.33 is the best achievable in expectation.
  assert bce(base_N) < min(bce(init_N) - 0.1, 0.36)
  assert base_N[has_x_N].mean() > 0.9 and base_N[~has_x_N].mean() > 0.5  # skewed as its labels

  calibrated, _ = fit.calibrate_prm(base, records, CFG, steps=200, batch_size=32,
                                    learning_rate=1e-2, seed=1, adapter=adapter, lora_rank=4)
  out_NxK = fit.predict(calibrated, CFG, records)
  q_NxQ = out_NxK[:, :MEAN]
  base_brier = metrics.brier(base_N, targets_N)
  assert metrics.brier(q_NxQ[:, 1], targets_N) < 0.35 * base_brier
  assert metrics.brier(out_NxK[:, MEAN], targets_N) < 0.35 * base_brier
  assert abs(np.median(q_NxQ[has_x_N, 1]) - 0.9) < 0.1
  assert abs(np.median(q_NxQ[~has_x_N, 1]) - 0.2) < 0.1
  ordered_N = (q_NxQ[:, 0] <= q_NxQ[:, 1]) & (q_NxQ[:, 1] <= q_NxQ[:, 2])
  assert ordered_N.mean() > 0.9


def test_bad_inputs_raise_errors_naming_the_field():
  records = _records(0, 4, (0.5, 0.5))
  with pytest.raises(ValueError, match="max_len=32"):
    encode_records([{**records[0], "text": "a" * 40}], CFG.max_len)
  with pytest.raises(ValueError, match="records must be non-empty"):
    fit.train_base_prm([], CFG, steps=1, batch_size=2, learning_rate=1e-3, seed=0)
  with pytest.raises(ValueError, match="'response_correct'"):
    fit.train_base_prm([{"text": "a\n"}], CFG, steps=1, batch_size=2, learning_rate=1e-3, seed=0)
  with pytest.raises(ValueError, match="'target'"):
    fit.calibrate_prm({}, [{**records[0], "target": 1.5}], CFG, steps=1, batch_size=2,
                      learning_rate=1e-3, seed=0)
  for levels in [(0.1, 1.0), (0.0, 0.5), ()]:
    with pytest.raises(ValueError, match="levels"):
      fit.calibrate_prm({}, records, CFG, levels=levels, steps=1, batch_size=2,
                        learning_rate=1e-3, seed=0)
  base, _ = fit.train_base_prm(records, CFG, steps=0, batch_size=2, learning_rate=1e-3, seed=0)
  calibrated, _ = fit.calibrate_prm(base, records, CFG, steps=0, batch_size=2, learning_rate=1e-3,
                                    seed=0)
  with pytest.raises(ValueError, match=r"calibration leaves \['delta', 'base_gain'\]"):
    fit.calibrate_prm(calibrated, records, CFG, steps=1, batch_size=2, learning_rate=1e-3, seed=0)
  with pytest.raises(ValueError, match=r"calibration leaves \['base_gain'\]"):
    fit.calibrate_prm({**base, "base_gain": jnp.zeros(())}, records, CFG, steps=1, batch_size=2,
                      learning_rate=1e-3, seed=0)
  with pytest.raises(ValueError, match="model.duo"):
    PRM(ModelConfig(**{**CFG.__dict__, "duo": True, "d_ff_small": 16})).init(
        jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
