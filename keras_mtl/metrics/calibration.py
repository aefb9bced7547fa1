"""Calibration metrics, which ranking engineers read before AUC: log loss, PCOC, ECE.

A fused ranking score multiplies predicted probabilities (and expected values); a task whose
predictions are off by a factor shifts every candidate's score by that factor's power, and an
auction or a watch-time budget reads the numbers themselves. AUC cannot see either.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_mtl.metrics.normalized_entropy import NormalizedEntropy


def _flat(y_true, y_pred, sample_weight):
    y_true = tf.reshape(tf.cast(y_true, tf.float32), [-1])
    y_pred = tf.reshape(tf.cast(y_pred, tf.float32), [-1])
    weight = (tf.ones_like(y_true) if sample_weight is None
              else tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))
    return y_true, y_pred, weight


@keras.saving.register_keras_serializable(package="keras_mtl")
class LogLoss(NormalizedEntropy):
    """Mean binary cross-entropy of the predicted probabilities, `−(1/N) Σ w_i (y_i log p_i +
    (1 − y_i) log(1 − p_i))` (NE's numerator; predictions clipped to [ε, 1 − ε]); NaN without
    rows."""

    def __init__(self, name: str = "logloss", epsilon: float = 1e-7, **kwargs):
        super().__init__(name=name, epsilon=epsilon, **kwargs)

    def result(self):
        value = tf.math.divide_no_nan(self.log_loss_sum, self.weight_sum)
        return tf.where(self.weight_sum > 0, value, float("nan"))


@keras.saving.register_keras_serializable(package="keras_mtl")
class PCOC(keras.metrics.Metric):
    """Predicted click over observed click: `PCOC = Σ w_i p_i / Σ w_i y_i` (He et al., "Practical
    Lessons from Predicting Clicks on Ads at Facebook", ADKDD'14, §3.2 calls its inverse the
    calibration). 1 is calibrated, above 1 over-predicts. Also the ratio of predicted to observed
    totals for counts, watch time and lifetime value. NaN while the observed total is 0."""

    def __init__(self, name: str = "pcoc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.predicted = self.add_variable((), initializer="zeros", name="predicted")
        self.observed = self.add_variable((), initializer="zeros", name="observed")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred, weight = _flat(y_true, y_pred, sample_weight)
        self.predicted.assign_add(tf.reduce_sum(weight * y_pred))
        self.observed.assign_add(tf.reduce_sum(weight * y_true))

    def result(self):
        return tf.where(self.observed > 0, tf.math.divide_no_nan(self.predicted, self.observed),
                        float("nan"))


@keras.saving.register_keras_serializable(package="keras_mtl")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error over `num_bins` equal-width probability bins (Naeini et al.,
    AAAI'15; Guo et al., ICML'17, eq. 3):

        ECE = Σ_b (n_b / N) · |mean p in b − mean y in b| = Σ_b |Σ_{i∈b} w_i (p_i − y_i)| / Σ_i w_i.

    0 is calibrated. Streaming: three sums per bin, exact over any number of batches. NaN
    without rows."""

    def __init__(self, name: str = "ece", num_bins: int = 10, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_bins = int(num_bins)
        self.weights_in = self.add_variable((self.num_bins,), initializer="zeros", name="weights")
        self.gaps = self.add_variable((self.num_bins,), initializer="zeros", name="gaps")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred, weight = _flat(y_true, y_pred, sample_weight)
        bins = tf.clip_by_value(tf.cast(tf.floor(y_pred * self.num_bins), tf.int32), 0,
                                self.num_bins - 1)
        self.weights_in.assign_add(tf.math.unsorted_segment_sum(weight, bins, self.num_bins))
        self.gaps.assign_add(tf.math.unsorted_segment_sum(weight * (y_pred - y_true), bins,
                                                          self.num_bins))

    def result(self):
        total = tf.reduce_sum(self.weights_in)
        return tf.where(total > 0,
                        tf.math.divide_no_nan(tf.reduce_sum(tf.abs(self.gaps)), total),
                        float("nan"))

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}
