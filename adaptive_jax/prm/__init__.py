"""Process reward model maths: calibration metrics, post-hoc calibrators, instance-adaptive scaling.

Imports only numpy, jax, scipy and scikit-learn.
"""

from adaptive_jax.prm.calibration import ConformalLowerBound
from adaptive_jax.prm.calibration import HistogramBinning
from adaptive_jax.prm.calibration import IsotonicCalibration
from adaptive_jax.prm.calibration import TemperatureScaling
from adaptive_jax.prm.ias import num_beams
from adaptive_jax.prm.ias import num_expansions
from adaptive_jax.prm.ias import num_samples
from adaptive_jax.prm.metrics import brier
from adaptive_jax.prm.metrics import ece
from adaptive_jax.prm.metrics import per_bucket
from adaptive_jax.prm.metrics import pinball_loss
from adaptive_jax.prm.metrics import quantile_coverage
from adaptive_jax.prm.metrics import reliability_curve
