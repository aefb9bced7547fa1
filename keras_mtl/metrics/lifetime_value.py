"""Lifetime-value metrics of the ZILN paper (Wang, Liu & Miao, arXiv 1912.07753, §4.2): the
normalised Gini coefficient (discrimination) and the decile-level MAPE (calibration).

Both need rows ordered by prediction over the whole evaluation. Streaming state: histograms over
`log1p(value)` in `num_buckets` equal-width buckets up to `log1p(max_value)`, of the rows' weight
and their summed labels and predictions; rows in one bucket are treated as tied (an even mix).
Results are exact when no two rows share a bucket, and within the bucket width (0.0125 in
`log1p`, ~1.3 % relative, by default) otherwise. Values above `max_value` share the top bucket.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


class _ValueHistogram(keras.metrics.Metric):
    def __init__(self, name: str, num_buckets: int = 2000, max_value: float = 7e10, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_buckets = int(num_buckets)
        self.max_value = float(max_value)
        shape = (self.num_buckets,)
        # By prediction bucket: rows' weight, Σ w·label, Σ w·prediction; by label bucket: weight
        # and Σ w·label (the perfect ordering's gain curve).
        self.by_prediction = self.add_variable((3, *shape), initializer="zeros", name="by_pred")
        self.by_label = self.add_variable((2, *shape), initializer="zeros", name="by_label")

    def _buckets(self, values):
        scaled = tf.math.log1p(tf.maximum(values, 0.0)) / math.log1p(self.max_value)
        return tf.clip_by_value(tf.cast(tf.floor(scaled * self.num_buckets), tf.int32), 0,
                                self.num_buckets - 1)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        y_pred = tf.reshape(tf.cast(y_pred, tf.float32), [-1])
        weight = (tf.ones_like(y_true) if sample_weight is None
                  else tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))
        n = self.num_buckets
        by_pred = tf.math.unsorted_segment_sum(
            tf.stack([weight, weight * y_true, weight * y_pred], axis=1), self._buckets(y_pred), n)
        by_label = tf.math.unsorted_segment_sum(
            tf.stack([weight, weight * y_true], axis=1), self._buckets(y_true), n)
        self.by_prediction.assign_add(tf.transpose(by_pred))
        self.by_label.assign_add(tf.transpose(by_label))

    def get_config(self):
        return {**super().get_config(), "num_buckets": self.num_buckets,
                "max_value": self.max_value}


def _gini(weights, gains):
    """Gini of the cumulative-gain curve of buckets taken from the highest: `2·A − 1`, A the area
    under (population share, label share), linear within a bucket (its rows tied)."""
    weights, gains = tf.reverse(weights, [0]), tf.reverse(gains, [0])
    population = tf.cumsum(weights) / tf.reduce_sum(weights)
    gain = tf.cumsum(gains) / tf.reduce_sum(gains)
    previous_population = tf.concat([[0.0], population[:-1]], 0)
    previous_gain = tf.concat([[0.0], gain[:-1]], 0)
    area = tf.reduce_sum((population - previous_population) * (gain + previous_gain) / 2.0)
    return 2.0 * area - 1.0


@keras.saving.register_keras_serializable(package="keras_mtl")
class NormalizedGini(_ValueHistogram):
    """`Gini(model) / Gini(perfect)`: the Gini coefficient of the cumulative-gain curve of rows
    sorted by prediction, divided by that of rows sorted by their true value (ZILN §4.2.1). 1
    orders customers perfectly, 0 is a random order. NaN while every label is 0 or no row."""

    def __init__(self, name: str = "gini", **kwargs):
        super().__init__(name=name, **kwargs)

    def result(self):
        weights, labels, _ = tf.unstack(self.by_prediction)
        label_weights, label_gains = tf.unstack(self.by_label)
        defined = (tf.reduce_sum(weights) > 0) & (tf.reduce_sum(labels) > 0)
        model, perfect = _gini(weights, labels), _gini(label_weights, label_gains)
        return tf.where(defined, tf.math.divide_no_nan(model, perfect), float("nan"))


@keras.saving.register_keras_serializable(package="keras_mtl")
class DecileMAPE(_ValueHistogram):
    """Decile-level mean absolute percentage error (ZILN §4.2.2): rows sorted by prediction are cut
    into 10 groups of equal weight, and `MAPE = mean_d |Σ_d prediction − Σ_d label| / Σ_d label`
    over the deciles with a non-zero label total. 0 is calibrated in every decile. A bucket that
    straddles a decile boundary is split in proportion to its weight. NaN without such decile."""

    def __init__(self, name: str = "decile_mape", num_deciles: int = 10, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_deciles = int(num_deciles)

    def result(self):
        weights, labels, predictions = (tf.reverse(v, [0]) for v in tf.unstack(self.by_prediction))
        total = tf.reduce_sum(weights)
        upper = tf.cumsum(weights) / tf.maximum(total, 1e-30)
        lower = upper - weights / tf.maximum(total, 1e-30)
        edges = tf.linspace(0.0, 1.0, self.num_deciles + 1)
        overlap = tf.maximum(0.0, tf.minimum(upper[:, None], edges[None, 1:])
                             - tf.maximum(lower[:, None], edges[None, :-1]))  # [buckets, deciles]
        share = tf.math.divide_no_nan(overlap, (upper - lower)[:, None])
        label_sums = tf.linalg.matvec(share, labels, transpose_a=True)
        prediction_sums = tf.linalg.matvec(share, predictions, transpose_a=True)
        valid = label_sums > 0
        errors = tf.math.divide_no_nan(tf.abs(prediction_sums - label_sums), label_sums)
        count = tf.reduce_sum(tf.cast(valid, tf.float32))
        return tf.where(count > 0, tf.reduce_sum(tf.where(valid, errors, 0.0)) / tf.maximum(count, 1.0),
                        float("nan"))

    def get_config(self):
        return {**super().get_config(), "num_deciles": self.num_deciles}
