"""Geometric loss strategy (Chennupati et al., CVPR Workshops 2019)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.registry import register


@register("gls")
class GeometricLoss(Weighting):
    """Minimise the geometric mean of the task losses.

    Chennupati et al., "MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss Strategy
    for Multi-Task Learning", CVPR Workshops 2019: `L = (Π_k L_k)^{1/K}`. Its gradient is
    `Σ_k w_k ∇L_k` with

        w_k = ∂L/∂L_k = (Π_j L_j)^{1/K} / (K L_k)

    computed in log space (no overflow or underflow of the product); losses are floored at
    `epsilon` (default 1e-8) so a task with a zero loss cannot produce an infinite weight.
    """

    def __init__(self, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = self.check_range("epsilon", epsilon, 0.0)

    def task_weights(self, losses, context, matrix=None):
        log_losses = tf.math.log(tf.maximum(tf.stop_gradient(losses), self.epsilon))
        return tf.exp(tf.reduce_mean(log_losses) - log_losses) / self.num_tasks, ()

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
