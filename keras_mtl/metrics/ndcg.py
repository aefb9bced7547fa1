"""NDCG@k per group (request / user) of a flat batch, for tasks trained with a ranking loss."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_mtl")
class GroupNDCG(keras.metrics.Metric):
    """Mean over groups of NDCG@k (Järvelin & Kekäläinen, TOIS 2002), with exponential gain:

        DCG@k = Σ_{i: rank_i ≤ k} (2^{y_i} − 1) / log2(1 + rank_i),   NDCG@k = DCG@k / IDCG@k,

    rank_i the position of row i in its group ordered by prediction (ties: batch order), IDCG@k
    the DCG@k of the order by label. A group is the rows of one batch with the same value of
    `group_feature`, as the ranking losses form them (`keras_mtl.tasks.ranking`): keep a request's
    rows in one batch. Groups without a relevant row (IDCG = 0) are left out, as NDCG is
    undefined for them; the result is NaN while no group counts. Each group's value equals
    keras-rs' `NDCG` of that group as one list (the tests check this).

    Args:
        group_feature: the feature that identifies a row's group; the model passes its values as
            `update_state(..., groups=...)`.
        k: the cut-off.
    """

    def __init__(self, group_feature: str = "request_id", k: int = 10, name: str | None = None,
                 **kwargs):
        super().__init__(name=name or f"ndcg_{k}", **kwargs)
        self.group_feature = group_feature
        self.k = int(k)
        self.total = self.add_variable((), initializer="zeros", name="total")
        self.groups_counted = self.add_variable((), initializer="zeros", name="groups")

    def update_state(self, y_true, y_pred, sample_weight=None, groups=None):
        if groups is None:
            raise ValueError(f"{self.name!r} needs update_state(..., groups=...) with the values of "
                             f"feature {self.group_feature!r}.")
        labels = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        scores = tf.reshape(tf.cast(y_pred, tf.float32), [-1])
        counted = (tf.ones_like(labels, tf.bool) if sample_weight is None
                   else tf.reshape(sample_weight, [-1]) > 0)
        groups = tf.reshape(groups, [-1])
        same = tf.equal(groups[:, None], groups[None, :]) & counted[:, None] & counted[None, :]
        index = tf.range(tf.shape(labels)[0])
        earlier = index[None, :] < index[:, None]  # [i, j]: j comes before i in the batch

        def positions(values):  # 1-based rank of each row within its group, ties by batch order
            ahead = (values[None, :] > values[:, None]) | (
                tf.equal(values[None, :], values[:, None]) & earlier)
            return 1.0 + tf.reduce_sum(tf.cast(ahead & same, tf.float32), axis=1)

        gains = tf.where(counted, tf.pow(2.0, labels) - 1.0, 0.0)

        def discounted(rank):
            kept = tf.cast(rank <= self.k, tf.float32)
            return gains * kept / (tf.math.log(1.0 + rank) / tf.math.log(2.0))

        same_float = tf.cast(same, tf.float32)
        dcg = tf.linalg.matvec(same_float, discounted(positions(scores)))  # each row: its group's
        ideal = tf.linalg.matvec(same_float, discounted(positions(labels)))
        size = tf.reduce_sum(same_float, axis=1)
        valid = counted & (ideal > 0)
        share = tf.where(valid, 1.0 / tf.maximum(size, 1.0), 0.0)  # a group's rows add up to 1
        self.total.assign_add(tf.reduce_sum(share * tf.math.divide_no_nan(dcg, ideal)))
        self.groups_counted.assign_add(tf.reduce_sum(share))

    def result(self):
        return tf.where(self.groups_counted > 0,
                        tf.math.divide_no_nan(self.total, self.groups_counted), float("nan"))

    def get_config(self):
        return {**super().get_config(), "group_feature": self.group_feature, "k": self.k}
