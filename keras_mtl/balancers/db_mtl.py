"""DB-MTL (Lin et al., arXiv 2308.12029)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Balancer, BalanceResult
from keras_mtl.balancers.linalg import row_norms, weighted_sum
from keras_mtl.balancers.registry import register


@register("db_mtl")
class DBMTL(Balancer):
    """Dual balancing: log-transformed losses, then gradients scaled to the largest norm.

    Lin et al., "Dual-Balancing for Multi-Task Learning", arXiv 2308.12029, Algorithm 1 (and
    LibMTL's `DB_MTL`):

        ĝ_k ← ∇ log(L_k + ε) + β_t (ĝ_k − ∇ log(L_k + ε)),   β_t = β / t^σ,   ∇ log(L_k + ε) = g_k / (L_k + ε)
        d = Σ_k (max_j ‖ĝ_j‖ / ‖ĝ_k‖) ĝ_k

    (loss-scale balancing by the log, gradient-magnitude balancing by the scaling). The EMA `ĝ`
    is a `[K, D]` state variable over the shared parameters, so this runs at the parameter level
    only (like LibMTL, which refuses representation gradients: rows of different batches do not
    align). It starts at zero, as in LibMTL. Heads are trained on `Σ_k log(L_k + ε)`: weights
    `1/(L_k + ε)`. Defaults β = 0.9, σ = 0, ε = 1e-8 (LibMTL's).
    """

    supported_levels = ("parameters",)
    default_level = "parameters"

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0, epsilon: float = 1e-8,
                 **kwargs):
        super().__init__(**kwargs)
        self.beta = self.check_range("beta", beta, 0.0, 1.0)
        self.beta_sigma = self.check_range("beta_sigma", beta_sigma, 0.0)
        self.epsilon = self.check_range("epsilon", epsilon, 0.0)

    def build_state(self, num_tasks):
        if self.num_columns is None:
            raise ValueError("db_mtl keeps an EMA of every task's parameter gradient and needs the "
                             "number of balanced parameters: build it through MultiTaskModel, or "
                             "pass num_columns to build().")
        self.buffer = self.add_weight(shape=(num_tasks, self.num_columns), initializer="zeros",
                                      trainable=False, name="gradient_ema")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def balance(self, matrix, losses, context):
        inverse = 1.0 / (tf.stop_gradient(losses) + self.epsilon)
        log_gradients = matrix * inverse[:, None]
        count = self.count + 1.0
        beta = self.beta / tf.pow(count, self.beta_sigma)
        buffer = log_gradients + beta * (self.buffer - log_gradients)
        norms = row_norms(buffer)
        scale = tf.reduce_max(norms) / (norms + 1e-8)
        return BalanceResult(weighted_sum(buffer, scale), inverse,
                             ((self.buffer, buffer), (self.count, count)))

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "beta_sigma": self.beta_sigma,
                "epsilon": self.epsilon}
