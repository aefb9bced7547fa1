"""Looking at a model: its task gradients before choosing a balancer (`gradients`), and where its
predictions are calibrated (`calibration`)."""

from keras_mtl.diagnostics.calibration import calibration_table
from keras_mtl.diagnostics.gradients import (
    BOTH_METHODS,
    CONFLICT_THRESHOLD,
    DIRECTION_METHODS,
    LEVELS,
    MAGNITUDE_METHODS,
    NORM_RATIO_THRESHOLD,
    GradientReport,
    gradient_cosines,
    gradient_report,
    norms_and_cosines,
    task_gradients,
)

__all__ = ["BOTH_METHODS", "CONFLICT_THRESHOLD", "DIRECTION_METHODS", "LEVELS",
           "MAGNITUDE_METHODS", "NORM_RATIO_THRESHOLD", "GradientReport", "calibration_table",
           "gradient_cosines", "gradient_report", "norms_and_cosines", "task_gradients"]
