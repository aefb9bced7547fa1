"""Inverse-EMA loss weighting (Lakkapragada et al., arXiv 2211.12999)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.registry import register


@register("ema_loss")
class EMALoss(Weighting):
    """Each loss scaled by the inverse of its exponential moving average.

    Lakkapragada et al., "Mitigating Negative Transfer in Multi-Task Learning with Exponential
    Moving Average Loss Weighting Strategies", arXiv 2211.12999: losses are balanced by their
    observed magnitudes,

        e_k ← β e_k + (1 − β) L_k,        w_k = 1 / max(e_k, ε)

    so every weighted loss `w_k L_k` is about 1. This is the base strategy only: the paper also
    defines variants that we could not check against its text, so they are not offered yet. The
    average starts at the first loss and includes the current one; defaults (ours): β = 0.9,
    ε = 1e-8.
    """

    def __init__(self, beta: float = 0.9, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.beta = self.check_range("beta", beta, 0.0, 1.0, high_open=True)
        self.epsilon = self.check_range("epsilon", epsilon, 0.0)

    def build_state(self, num_tasks):
        self.average = self.add_weight(shape=(num_tasks,), initializer="zeros", trainable=False,
                                       name="average")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def task_weights(self, losses, context, matrix=None):
        losses = tf.stop_gradient(losses)
        average = tf.where(self.count < 1.0, losses,
                           self.beta * self.average + (1 - self.beta) * losses)
        return 1.0 / tf.maximum(average, self.epsilon), ((self.average, average),
                                                         (self.count, self.count + 1.0))

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "epsilon": self.epsilon}
