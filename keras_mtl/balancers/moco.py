"""MoCo (Fernando et al., ICLR 2023): MGDA with tracked gradients."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_mtl.balancers.base import Balancer, BalanceResult
from keras_mtl.balancers.linalg import gramian, project_to_simplex, row_norms, weighted_sum
from keras_mtl.balancers.registry import register


@register("moco")
class MoCo(Balancer):
    """Multi-objective gradient correction: MGDA on running estimates of the task gradients.

    Fernando et al., "Mitigating Gradient Bias in Multi-objective Learning: A Provably Convergent
    Approach", ICLR 2023, Algorithm 1. With the stochastic task gradients `g_k` of the step,
    tracked gradients `y_k` and weights `λ` on the simplex, at step t:

        y_k ← y_k − β_t (y_k − g_k)                         (β_t = β / t^σ_β)
        λ   ← Π_Δ(λ − γ_t (YYᵀ + ρI) λ)                      (γ_t = γ / t^σ_γ, Y's rows the y_k)
        d   = Σ_k λ_k y_k

    (the paper's optional projection of `y_k` onto a bounded set is left out). `y` starts at 0
    and `λ` at 1/K; defaults β = 0.5, σ_β = 0.5, γ = 0.1, σ_γ = 0.5, ρ = 0 are LibMTL's. The update
    is built from the tracked `y`, not from this step's `J`, so this is not a weighting: heads
    get their own task's gradient, and embedding tables left out of the matrix the plain sum.

    Differences from LibMTL (which follows the authors' code): LibMTL replaces each `g_k` by
    `L_k · g_k / ‖g_k‖` before tracking, and maps `λ` through a softmax instead of projecting it
    onto the simplex. We follow the paper: the projection, and raw gradients unless
    `normalize=True` (LibMTL's rescaling; it makes `γ` independent of the gradients' scale). The
    tracked gradients have the width of the balanced parameters, so MoCo runs at the parameter
    level only (as in LibMTL); its state is K × that width.
    """

    supported_levels = ("parameters",)
    default_level = "parameters"

    def __init__(self, beta: float = 0.5, beta_sigma: float = 0.5, gamma: float = 0.1,
                 gamma_sigma: float = 0.5, rho: float = 0.0, normalize: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.beta = self.check_range("beta", beta, 0.0, 1.0)
        self.beta_sigma = self.check_range("beta_sigma", beta_sigma, 0.0)
        self.gamma = self.check_range("gamma", gamma, 0.0)
        self.gamma_sigma = self.check_range("gamma_sigma", gamma_sigma, 0.0)
        self.rho = self.check_range("rho", rho, 0.0)
        self.normalize = bool(normalize)

    def build_state(self, num_tasks):
        if self.num_columns is None:
            raise ValueError("moco tracks every task's parameter gradient and needs the number of "
                             "balanced parameters: build it through MultiTaskModel, or pass "
                             "num_columns to build().")
        self.tracked = self.add_weight(shape=(num_tasks, self.num_columns), initializer="zeros",
                                       trainable=False, name="tracked_gradients")
        self.lambd = self.add_weight(shape=(num_tasks,),
                                     initializer=keras.initializers.Constant(1.0 / num_tasks),
                                     trainable=False, name="lambda")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def balance(self, matrix, losses, context):
        if self.normalize:
            scale = tf.stop_gradient(losses) / (row_norms(matrix) + 1e-8)
            matrix = matrix * scale[:, None]
        count = self.count + 1.0
        beta = self.beta / tf.pow(count, self.beta_sigma)
        gamma = self.gamma / tf.pow(count, self.gamma_sigma)
        tracked = self.tracked - beta * (self.tracked - matrix)
        gram = gramian(tracked) + self.rho * tf.eye(self.num_tasks)
        lambd = project_to_simplex(self.lambd - gamma * tf.linalg.matvec(gram, self.lambd))
        combined = weighted_sum(tracked, lambd)
        ones = tf.ones([self.num_tasks], tf.float32)
        return BalanceResult(combined, ones, ((self.tracked, tracked),
                                              (self.lambd, lambd),
                                              (self.count, count)))

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "beta_sigma": self.beta_sigma,
                "gamma": self.gamma, "gamma_sigma": self.gamma_sigma, "rho": self.rho,
                "normalize": self.normalize}
