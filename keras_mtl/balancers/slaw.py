"""SLAW (Crawshaw & Košecká, arXiv 2109.08218)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.registry import register


@register("slaw")
class SLAW(Weighting):
    """Scaled Loss Approximate Weighting: weights from running loss statistics, no extra passes.

    Crawshaw & Košecká, "SLAW: Scaled Loss Approximate Weighting for Efficient Multi-Task
    Learning", arXiv 2109.08218. A task's gradient norm is estimated by the standard deviation of
    its loss, kept with exponential moving averages:

        a_k ← β a_k + (1 − β) L_k,   b_k ← β b_k + (1 − β) L_k²,   σ_k = sqrt(max(b_k − a_k², 0))
        w_k = K · (1 / max(σ_k, ε)) / Σ_j (1 / max(σ_j, ε))

    As in the authors' reference code (β = 0.99, ε = 1e-5, weights summing to K), the weights
    used at a step come from the statistics of the *previous* losses, and stay 1 until two losses
    have been seen (one value has no spread). Our choice: the averages start at the first loss
    (not 0), so no bias correction is needed. Loss level: no per-task backward passes at all.
    """

    def __init__(self, beta: float = 0.99, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.beta = self.check_range("beta", beta, 0.0, 1.0, high_open=True)
        self.epsilon = self.check_range("epsilon", epsilon, 0.0)

    def build_state(self, num_tasks):
        self.mean = self.add_weight(shape=(num_tasks,), initializer="zeros", trainable=False,
                                    name="mean")
        self.mean_square = self.add_weight(shape=(num_tasks,), initializer="zeros",
                                           trainable=False, name="mean_square")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def task_weights(self, losses, context, matrix=None):
        losses = tf.stop_gradient(losses)
        sigma = tf.sqrt(tf.maximum(self.mean_square - tf.square(self.mean), 0.0))
        inverse = 1.0 / tf.maximum(sigma, self.epsilon)
        weights = self.num_tasks * inverse / tf.reduce_sum(inverse)
        weights = tf.where(self.count >= 2.0, weights, tf.ones_like(weights))
        first = self.count < 1.0
        mean = tf.where(first, losses, self.beta * self.mean + (1 - self.beta) * losses)
        mean_square = tf.where(first, tf.square(losses),
                               self.beta * self.mean_square + (1 - self.beta) * tf.square(losses))
        return weights, ((self.mean, mean), (self.mean_square, mean_square),
                         (self.count, self.count + 1.0))

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "epsilon": self.epsilon}
