"""Process reward models: the PRM network and its training, Monte-Carlo labels, calibration
metrics and post-hoc calibrators (how many samples a question gets: adaptive_jax.allocation)."""

from adaptive_jax.prm.calibration import (
  ConformalLowerBound,
  HistogramBinning,
  IsotonicCalibration,
  TemperatureScaling,
)
from adaptive_jax.prm.fit import calibrate_prm, predict, train_base_prm
from adaptive_jax.prm.metrics import (
  brier,
  brier_ratio,
  ece,
  per_bucket,
  pinball_loss,
  quantile_coverage,
  reliability_curve,
)
from adaptive_jax.prm.model import PRM, encode_records, encode_texts

__all__ = [
    "ConformalLowerBound",
    "HistogramBinning",
    "IsotonicCalibration",
    "TemperatureScaling",
    "brier",
    "brier_ratio",
    "ece",
    "per_bucket",
    "pinball_loss",
    "quantile_coverage",
    "reliability_curve",
    "calibrate_prm",
    "predict",
    "train_base_prm",
    "PRM",
    "encode_records",
    "encode_texts",
]
