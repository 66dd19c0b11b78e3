"""Process reward models: the PRM network and its training, Monte-Carlo labels, calibration
metrics, post-hoc calibrators, and instance-adaptive scaling."""

from adaptive_jax.prm.calibration import ConformalLowerBound
from adaptive_jax.prm.calibration import HistogramBinning
from adaptive_jax.prm.calibration import IsotonicCalibration
from adaptive_jax.prm.calibration import TemperatureScaling
from adaptive_jax.allocation.ias import num_beams
from adaptive_jax.allocation.ias import num_expansions
from adaptive_jax.allocation.ias import num_samples
from adaptive_jax.prm.metrics import brier
from adaptive_jax.prm.metrics import brier_ratio
from adaptive_jax.prm.metrics import ece
from adaptive_jax.prm.metrics import per_bucket
from adaptive_jax.prm.metrics import pinball_loss
from adaptive_jax.prm.metrics import quantile_coverage
from adaptive_jax.prm.metrics import reliability_curve
from adaptive_jax.prm.fit import calibrate_prm
from adaptive_jax.prm.fit import predict
from adaptive_jax.prm.fit import train_base_prm
from adaptive_jax.prm.model import PRM
from adaptive_jax.prm.model import encode_records
from adaptive_jax.prm.model import encode_texts
