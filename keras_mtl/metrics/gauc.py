"""Group AUC: the impression-weighted mean of per-user AUCs."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_mtl")
class GAUC(keras.metrics.Metric):
    """User-grouped AUC (Zhou et al., DIN, KDD 2018; the offline metric of GradCraft, KDD 2024).

        GAUC = Σ_u n_u · AUC_u / Σ_u n_u,

    over the groups u (users) that have at least one positive and one negative row, with n_u the
    (sample-weighted) number of rows of u. It measures ranking *within* a user, which is what a
    recommender's ranking stage is for; a global AUC also rewards separating users from each other.

    Streaming state: per group slot, a histogram of positive and negative weight over
    `num_thresholds` equal-width score buckets on [0, 1]. `AUC_u` is the Mann-Whitney statistic on
    those buckets: a positive beats every negative in a lower bucket, and ties (same bucket) count
    1/2. It is exact when no two rows of a group that differ in label share a bucket; otherwise
    their scores are treated as tied (resolution `1/num_thresholds`).

    Integer group ids map to slot `id mod num_groups` and strings are hashed, so the result is exact
    when there are at most `num_groups` distinct ids in `[0, num_groups)`; beyond that, colliding
    groups are pooled. With no group that has both labels, the result is NaN (undefined). A group
    feature that the input pipeline looked up (`keras_mtl.features.lookups`) groups by its table
    row: a vocabulary of at most `num_groups` values is exact, and the out-of-vocabulary values
    form one group.

    Args:
        group_feature: the feature whose value identifies a row's group (e.g. `"user_id"`). The model
            passes it as `update_state(..., groups=features[group_feature])`.
    """

    def __init__(
        self,
        group_feature: str = "user_id",
        num_groups: int = 4096,
        num_thresholds: int = 200,
        name: str = "gauc",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.group_feature = group_feature
        self.num_groups = int(num_groups)
        self.num_thresholds = int(num_thresholds)
        shape = (self.num_groups, self.num_thresholds)
        self.positives = self.add_variable(shape, initializer="zeros", name="positives")
        self.negatives = self.add_variable(shape, initializer="zeros", name="negatives")

    def _slots(self, groups):
        groups = tf.reshape(groups, [-1])
        if groups.dtype == tf.string:
            return tf.strings.to_hash_bucket_fast(groups, self.num_groups)
        return tf.math.floormod(tf.cast(groups, tf.int64), self.num_groups)

    def update_state(self, y_true, y_pred, sample_weight=None, groups=None):
        if groups is None:
            raise ValueError(
                f"GAUC {self.name!r} needs the group ids: update_state(..., groups=...) with the "
                f"values of feature {self.group_feature!r}."
            )
        y_true = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        y_pred = tf.reshape(tf.cast(y_pred, tf.float32), [-1])
        weight = (
            tf.ones_like(y_true)
            if sample_weight is None
            else tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        )
        bucket = tf.clip_by_value(
            tf.cast(tf.floor(y_pred * self.num_thresholds), tf.int64), 0, self.num_thresholds - 1
        )
        index = tf.stack([self._slots(groups), bucket], axis=1)
        shape = tf.constant([self.num_groups, self.num_thresholds], tf.int64)
        self.positives.assign_add(tf.scatter_nd(index, weight * y_true, shape))
        self.negatives.assign_add(tf.scatter_nd(index, weight * (1.0 - y_true), shape))

    def result(self):
        positives, negatives = self.positives, self.negatives
        negatives_below = tf.cumsum(negatives, axis=1, exclusive=True)
        wins = tf.reduce_sum(positives * (negatives_below + 0.5 * negatives), axis=1)
        num_pos = tf.reduce_sum(positives, axis=1)
        num_neg = tf.reduce_sum(negatives, axis=1)
        valid = (num_pos > 0) & (num_neg > 0)
        auc = tf.math.divide_no_nan(wins, num_pos * num_neg)
        impressions = tf.where(valid, num_pos + num_neg, 0.0)
        total = tf.reduce_sum(impressions)
        # No group with both labels: undefined, NaN (0.0 would read as the worst ranking).
        return tf.where(total > 0, tf.math.divide_no_nan(tf.reduce_sum(impressions * auc), total),
                        float("nan"))

    def get_config(self):
        return {
            **super().get_config(),
            "group_feature": self.group_feature,
            "num_groups": self.num_groups,
            "num_thresholds": self.num_thresholds,
        }
