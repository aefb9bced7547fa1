"""Dynamic Task Prioritization (Guo et al., ECCV 2018)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.registry import register


@register("dtp")
class DTP(Weighting):
    """Focal-loss-style task weights from a moving average of each task's KPI.

    Guo et al., "Dynamic Task Prioritization for Multitask Learning", ECCV 2018, §3:

        κ̄_k ← β κ̄_k + (1 − β) κ_k,        w_k = −(1 − κ̄_k)^γ · log κ̄_k

    so a task whose KPI κ̄ is low (hard) gets more weight, one near 1 (easy) almost none; γ focuses
    like the focal loss' γ.

    The KPI: the paper uses a task metric (accuracy, AP) in [0, 1]. A balancer sees losses, so the
    KPI here is the batch *likelihood* `κ_k = exp(−L_k)`: for cross-entropy it is the geometric mean
    of the probability given to the true labels, in (0, 1] and monotone in the loss; for a
    squared-error task it is a monotone proxy. This is our choice, stated because the paper's
    metric-based KPI needs the metric inside the step. The average starts at the first KPI;
    weights use the average including the current batch; κ̄ is clipped to [1e-6, 1]. Defaults
    (ours): γ = 1, β = 0.9.
    """

    def __init__(self, gamma: float = 1.0, beta: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.gamma = self.check_range("gamma", gamma, 0.0)
        self.beta = self.check_range("beta", beta, 0.0, 1.0, high_open=True)

    def build_state(self, num_tasks):
        self.kpi = self.add_weight(shape=(num_tasks,), initializer="zeros", trainable=False,
                                   name="kpi")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def task_weights(self, losses, context, matrix=None):
        kpi = tf.exp(-tf.stop_gradient(losses))
        kpi = tf.where(self.count < 1.0, kpi, self.beta * self.kpi + (1 - self.beta) * kpi)
        clipped = tf.clip_by_value(kpi, 1e-6, 1.0)
        weights = -tf.pow(1.0 - clipped, self.gamma) * tf.math.log(clipped)
        return weights, ((self.kpi, kpi), (self.count, self.count + 1.0))

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "beta": self.beta}
