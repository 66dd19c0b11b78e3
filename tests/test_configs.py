"""Every config in configs/ loads, validates and builds its model under jax.eval_shape."""

import importlib
import pathlib

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adaptive_jax.nn.config import ModelConfig
from adaptive_jax.nn.transformer import Transformer
from adaptive_jax.train.loop import typed_configs
from adaptive_jax.train.state import count_params
from adaptive_jax.typed_config import check_integer, check_number

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
DUO_CONFIGS = sorted(CONFIG_DIR.glob("duo_*.py"))  # oracle configs: see test_oracle_study.py


def _load_module(path, arg):
  module = importlib.import_module(f"configs.{path.stem}")
  return module.get_config(arg) if arg is not None else module.get_config()


def _abstract_params(config):
  model_cfg, data_cfg, *_ = typed_configs(config)
  tokens = jax.ShapeDtypeStruct((1, data_cfg.seq_len), jnp.int32)
  routes = (jax.ShapeDtypeStruct((1, data_cfg.seq_len, model_cfg.num_layers), jnp.int32)
            if model_cfg.duo else None)
  return jax.eval_shape(
      lambda t, r: Transformer(model_cfg).init(jax.random.key(0), t, route_BxTxL=r),
      tokens, routes)["params"]


def _expected_shapes(cfg: ModelConfig) -> dict:
  """Every parameter's shape, from the config alone (layers stacked on a leading L axis)."""
  L, D, V = cfg.num_layers, cfg.d_model, cfg.vocab_size
  N, K, H = cfg.num_heads, cfg.num_kv_heads or cfg.num_heads, cfg.head_dim
  ffn = lambda F: {"gate": (L, D, F), "up": (L, D, F), "down": (L, F, D)}
  layers = {"attention": {"query": (L, D, N, H), "key": (L, D, K, H), "value": (L, D, K, H),
                          "out": (L, N, H, D)},
            "attention_norm": {"scale": (L, D)}, "ffn_norm": {"scale": (L, D)}}
  if cfg.duo:
    layers["duo_ffn"] = {"big": ffn(cfg.d_ff_big), "small": ffn(cfg.d_ff_small)}
  else:
    layers["ffn"] = ffn(cfg.d_ff_big)
  shapes = {"embed": {"embedding": (V, D)}, "final_norm": {"scale": (D,)}, "layers": layers}
  if not cfg.tie_embeddings:
    shapes["unembed"] = (D, V)
  return shapes


def _shapes(params) -> dict:
  params = flax.core.unfreeze(nn.meta.unbox(params))
  return jax.tree.map(lambda x: tuple(x.shape), params,
                      is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))


def _model_sections(config, prefix=""):
  """Dotted paths of the `model` sections (ModelConfigs) anywhere in a config."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      if key == "model":
        yield prefix + key
      yield from _model_sections(value, f"{prefix}{key}.")


_CONFIG_ARGS = {"duo_pbig_ablation": ("0", "0.25", "0.5", "0.75", "1"),
                "quick": (None, "small", "paper")}
MODEL_SECTIONS = [
    pytest.param(path, arg, dotted, id=f"{path.stem}{':' + arg if arg else ''}:{dotted}")
    for path in sorted(CONFIG_DIR.glob("*.py")) if path.stem != "__init__"
    for arg in _CONFIG_ARGS.get(path.stem, (None,))
    for dotted in _model_sections(_load_module(path, arg))]


def test_model_sections_are_found_in_every_config_that_has_one():
  found = {param.values[0].stem for param in MODEL_SECTIONS}
  assert found >= {"duo_paper", "duo_pbig_ablation", "duo_small", "duo_tiny", "policy_small",
                   "calibrate_small", "calibrate_small_matched", "quick"}, found
  assert len(MODEL_SECTIONS) >= 17


@pytest.mark.parametrize("path, arg, dotted", MODEL_SECTIONS)
def test_every_model_section_builds_the_shapes_it_names(path, arg, dotted):
  section = _load_module(path, arg)
  for key in dotted.split("."):
    section = section[key]
  cfg = ModelConfig.from_dict(section)
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  routes = jax.ShapeDtypeStruct((1, 8, cfg.num_layers), jnp.int32) if cfg.duo else None
  params = jax.eval_shape(
      lambda t, r: Transformer(cfg).init(jax.random.key(0), t, route_BxTxL=r), tokens,
      routes)["params"]
  assert _shapes(params) == _expected_shapes(cfg)
  assert {x.dtype for x in jax.tree.leaves(nn.meta.unbox(params))} == {cfg.weight_dtype}


@pytest.mark.parametrize("path", DUO_CONFIGS, ids=lambda p: p.stem)
def test_config_builds_under_eval_shape(path):
  """Through the training loop's typed configs, which also check the data against the model."""
  config = _load_module(path, None)
  model_cfg, *_ = typed_configs(config)
  assert _shapes(_abstract_params(config)) == _expected_shapes(model_cfg)


def test_paper_config_has_about_1_4b_parameters():
  num = count_params(_abstract_params(_load_module(CONFIG_DIR / "duo_paper.py", None)))
  print(f"duo_paper parameters: {num:,}")
  # 12 layers x 109.8M (attention 4 x 2560 x 20 x 128, SwiGLU FFNs 3 x 2560 x (10240 + 640),
  # two norms) + the tied 32000 x 2560 embedding + the final norm.
  per_layer = 4 * 2560 * 20 * 128 + 3 * 2560 * (10240 + 640) + 2 * 2560
  assert num == 12 * per_layer + 32000 * 2560 + 2560 == 1_399_257_600


@pytest.mark.parametrize("p_big", ["0", "0.25", "0.5", "0.75", "1"])
def test_pbig_ablation_configs(p_big):
  config = _load_module(CONFIG_DIR / "duo_pbig_ablation.py", p_big)
  assert config.routing.p_big == float(p_big)
  _abstract_params(config)


def test_pbig_ablation_rejects_other_values():
  with pytest.raises(ValueError, match="p_big in"):
    _load_module(CONFIG_DIR / "duo_pbig_ablation.py", "0.3")


@pytest.mark.parametrize("section, field, value, message", [
    ("model", "num_layers", 0, "model.num_layers must be a positive integer"),
    ("model", "dtype", "float8", "model.dtype must be one of"),
    ("model", "head_dim", 7, "model.head_dim must be even"),
    ("routing", "p_big", 1.5, "routing.p_big must be a probability"),
    ("routing", "freeze_big_after", -5, "routing.freeze_big_after must be -1"),
    ("train", "num_steps", 0, "train.num_steps must be an integer >= 1"),
    ("train", "learning_rate", -1.0, "train.learning_rate must be > 0"),
    ("train", "mesh_shape", (0, 1), "train.mesh_shape must be"),
    ("eval", "num_batches", 0, "eval.num_batches must be an integer >= 1"),
    ("data", "name", "imagenet", "name"),
    ("data", "batch_size", 0, "data.batch_size must be positive"),
])
def test_bad_config_values_raise_naming_the_field(section, field, value, message):
  config = _load_module(CONFIG_DIR / "duo_tiny.py", None)
  config[section][field] = value
  with pytest.raises(ValueError, match=message):
    typed_configs(config)


def test_unknown_config_field_is_rejected():
  config = _load_module(CONFIG_DIR / "duo_tiny.py", None)
  config.model.num_expert = 4
  with pytest.raises(ValueError, match=r"unknown model config fields \['num_expert'\]"):
    typed_configs(config)


def test_vocab_mismatch_is_rejected():
  config = _load_module(CONFIG_DIR / "duo_tiny.py", None)
  config.model.vocab_size = 300  # one shared reference: the tokenizer follows
  assert config.data.vocab_size == 300
  values = config.to_dict()
  values["data"]["vocab_size"] = 512
  with pytest.raises(ValueError, match="data.vocab_size"):
    typed_configs(ml_collections.ConfigDict(values))


def test_shared_validators_take_numpy_values_and_name_the_field():
  assert check_integer("x", np.int64(3)) == 3 and type(check_integer("x", np.int32(3))) is int
  assert check_number("q", np.float32(0.5), 0.0, 1.0) == 0.5
  for bad in (True, np.bool_(True), 2.0, 0, "3", None):
    with pytest.raises(ValueError, match=r"x must be an integer >= 1, got "):
      check_integer("x", bad)
  with pytest.raises(ValueError, match=r"split_depth must be an integer in \[0, 3\], got 4"):
    check_integer("split_depth", 4, minimum=0, maximum=3)
  for bad in (True, float("nan"), 0.0, 1.0, "0.5"):
    with pytest.raises(ValueError, match=r"q must be a number in \(0.0, 1.0\), got "):
      check_number("q", bad, 0.0, 1.0)
