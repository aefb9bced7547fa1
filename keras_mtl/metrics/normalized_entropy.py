"""Normalised entropy (He et al., "Practical Lessons from Predicting Clicks on Ads at Facebook")."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_mtl")
class NormalizedEntropy(keras.metrics.Metric):
    """NE = average log loss / entropy of the average label.

        NE = [-(1/N) Σ_i w_i (y_i log p_i + (1-y_i) log(1-p_i))] / [-(p̄ log p̄ + (1-p̄) log(1-p̄))],
        p̄ = Σ w_i y_i / Σ w_i.

    Lower is better; a model that predicts the base rate everywhere scores 1. Predictions are
    clipped to `[epsilon, 1 - epsilon]`. Streaming: three weighted sums, so it is exact over any
    number of batches. With no (positively weighted) row the result is NaN, not 0: 0 would read
    as a perfect model.
    """

    def __init__(self, name: str = "ne", epsilon: float = 1e-7, **kwargs):
        super().__init__(name=name, **kwargs)
        self.epsilon = float(epsilon)
        self.weight_sum = self.add_variable((), initializer="zeros", name="weight_sum")
        self.label_sum = self.add_variable((), initializer="zeros", name="label_sum")
        self.log_loss_sum = self.add_variable((), initializer="zeros", name="log_loss_sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        y_pred = tf.clip_by_value(
            tf.reshape(tf.cast(y_pred, tf.float32), [-1]), self.epsilon, 1.0 - self.epsilon
        )
        weight = (
            tf.ones_like(y_true)
            if sample_weight is None
            else tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        )
        log_loss = -(y_true * tf.math.log(y_pred) + (1.0 - y_true) * tf.math.log(1.0 - y_pred))
        self.weight_sum.assign_add(tf.reduce_sum(weight))
        self.label_sum.assign_add(tf.reduce_sum(weight * y_true))
        self.log_loss_sum.assign_add(tf.reduce_sum(weight * log_loss))

    def result(self):
        base_rate = tf.clip_by_value(
            tf.math.divide_no_nan(self.label_sum, self.weight_sum), self.epsilon, 1 - self.epsilon
        )
        entropy = -(base_rate * tf.math.log(base_rate)
                    + (1.0 - base_rate) * tf.math.log(1.0 - base_rate))
        value = tf.math.divide_no_nan(tf.math.divide_no_nan(self.log_loss_sum, self.weight_sum),
                                      entropy)
        return tf.where(self.weight_sum > 0, value, float("nan"))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
