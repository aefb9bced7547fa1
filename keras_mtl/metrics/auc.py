"""`AUC` that says "no data" (NaN) instead of Keras' 0.0."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_mtl")
class AUC(keras.metrics.AUC):
    """`keras.metrics.AUC` whose `result()` is NaN when it has seen no (positively weighted) row.

    Keras' AUC returns 0.0 with no data, which reads as "the worst possible ranking" in a log: a
    task with no labelled rows in an evaluation (a sample-space task whose parent never fired, an
    ESMM task without clicks) would report `AUC 0.0`. NaN says the value is undefined. Everything
    else (thresholds, weighting, config) is Keras'.
    """

    def result(self):
        # Every row lands in exactly one of tp/fn/fp/tn at every threshold: their sum at the first
        # threshold is the total weight seen (per label when multi_label).
        seen = (self.true_positives[0] + self.false_negatives[0] + self.false_positives[0]
                + self.true_negatives[0])
        value = super().result()
        return tf.where(tf.reduce_sum(seen) > 0, value, tf.constant(float("nan"), value.dtype))
