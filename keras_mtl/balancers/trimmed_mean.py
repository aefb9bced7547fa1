"""Coordinate-wise trimmed mean (Yin et al., ICML 2018), as a TorchJD aggregator."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Balancer, BalanceResult
from keras_mtl.balancers.registry import register


@register("trimmed_mean")
class TrimmedMean(Balancer):
    """Per coordinate, the mean of the task gradients after dropping the `trim` largest and the
    `trim` smallest values.

    Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
    ICML 2018, Definition 2 (β-trimmed mean with `β = trim / K`): for coordinate j, with
    `g_(1)j ≤ … ≤ g_(K)j` the sorted task values,

        d_j = 1/(K − 2·trim) · Σ_{i = trim+1}^{K−trim} g_(i)j

    (TorchJD's `TrimmedMean(trim_number)`). `trim = 0` is `mean`. Needs `K ≥ 2·trim + 1`,
    checked when the balancer meets the model's tasks. Coordinate-wise, so not a weighting: shared
    parameters left out of a parameter-level matrix (embedding tables) get the plain sum of the
    task gradients, and the heads their own task's gradient. At `level="representation"` a
    coordinate is one entry of the cut gradient (a row of the batch × a unit).
    """

    balances_float64 = True

    def __init__(self, trim: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.trim = int(self.check_range("trim", trim, 0.0))
        if self.trim != trim:
            raise ValueError(f"trimmed_mean trim must be an integer, got {trim!r}.")

    def build_state(self, num_tasks):
        if num_tasks < 2 * self.trim + 1:
            raise ValueError(
                f"trimmed_mean with trim = {self.trim} drops 2·trim = {2 * self.trim} values per "
                f"coordinate and needs at least {2 * self.trim + 1} tasks; the model has "
                f"{num_tasks}.")

    def balance(self, matrix, losses, context):
        kept = self.num_tasks - 2 * self.trim
        ordered = tf.sort(matrix, axis=0)
        combined = tf.reduce_mean(ordered[self.trim:self.trim + kept], axis=0)
        return BalanceResult(combined, tf.ones([self.num_tasks], tf.float32), ())

    def get_config(self):
        return {**super().get_config(), "trim": self.trim}
