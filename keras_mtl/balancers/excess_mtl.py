"""ExcessMTL (He et al., ICML 2024): task weights from estimated excess risks."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.registry import register


@register("excess_mtl")
class ExcessMTL(Weighting):
    """Weights that grow with each task's estimated distance to convergence (excess risk).

    He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024, Algorithm 1. The excess
    risk `L_k(θ) − L_k(θ*_k)` is estimated by a second-order Taylor expansion,
    `≈ ½ g_kᵀ H_k⁻¹ g_k`, with `H_k` the diagonal of the accumulated empirical Fisher in AdaGrad's
    form; each estimate is divided by the task's first one (scale normalisation), and the weights
    take an exponentiated-gradient (multiplicative-weights) step on the simplex:

        A_k ← A_k + g_k ⊙ g_k,       e_k = g_kᵀ diag(√(A_k + ε))⁻¹ g_k,      r_k = e_k / e_k⁽⁰⁾
        α_k ← α_k · exp(η r_k) / Σ_j α_j · exp(η r_j)                         d = Σ_k α_k g_k

    with `η` (`step_size`, default 0.01) and ε = 1e-7 (LibMTL's, which follows the official code).
    `α` starts at 1/K; `e⁽⁰⁾` is a task's first non-zero estimate (a task whose first batches have
    no labelled rows gets it later, and `r_k = 0` until then) — on the first step every `r_k` is 1
    and the weights stay uniform, as in the official code. The ½ cancels in `r_k`. The weights
    take their step in log space (no overflow however large `η r` grows).

    Differences from LibMTL: it rescales the weights to sum to K (the paper's weights lie on the
    simplex, ours sum to 1: multiply the learning rate by K for LibMTL's step). Its representation
    mode sums the cut gradients over the batch; the accumulated squares `A` here have the width of
    the balanced parameters, so ExcessMTL runs at the parameter level only. A weighting: heads and
    embedding tables get the same weights (`Σ_k α_k L_k`), as in the paper.
    """

    supported_levels = ("parameters",)
    default_level = "parameters"
    needs_matrix = True

    def __init__(self, step_size: float = 0.01, epsilon: float = 1e-7, **kwargs):
        super().__init__(**kwargs)
        self.step_size = self.check_range("step_size", step_size, 0.0)
        self.epsilon = self.check_range("epsilon", epsilon, 0.0)

    def build_state(self, num_tasks):
        if self.num_columns is None:
            raise ValueError("excess_mtl accumulates every task's squared parameter gradient and "
                             "needs the number of balanced parameters: build it through "
                             "MultiTaskModel, or pass num_columns to build().")
        self.squares = self.add_weight(shape=(num_tasks, self.num_columns), initializer="zeros",
                                       trainable=False, name="squared_gradients")
        self.initial = self.add_weight(shape=(num_tasks,), initializer="zeros", trainable=False,
                                       name="initial_excess_risk")
        self.log_weights = self.add_weight(shape=(num_tasks,), initializer="zeros",
                                           trainable=False, name="log_weights")

    def task_weights(self, losses, context, matrix=None):
        squares = self.squares + tf.square(matrix)
        excess = tf.reduce_sum(tf.square(matrix) / tf.sqrt(squares + self.epsilon), axis=1)
        initial = tf.where(self.initial > 0, self.initial, excess)
        ratio = tf.where(initial > 0, excess / tf.where(initial > 0, initial, 1.0), 0.0)
        log_weights = tf.nn.log_softmax(self.log_weights + self.step_size * ratio)
        return tf.exp(log_weights), ((self.squares, squares), (self.initial, initial),
                                     (self.log_weights, log_weights))

    def get_config(self):
        return {**super().get_config(), "step_size": self.step_size, "epsilon": self.epsilon}
