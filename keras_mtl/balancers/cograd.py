"""CoGrad (Yang et al., SIGIR 2023)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from keras_mtl.balancers.base import Balancer, BalanceResult
from keras_mtl.balancers.registry import register

HESSIANS = ("fisher_diag", "exact")


def transference_hessian_term(loss_fn: Callable[[], tf.Tensor], variables: Sequence) -> tf.Tensor:
    """Exact `Σ_i H_i (S − g_i)`, `S = Σ_j g_j`, flattened over `variables`, in one HVP.

    `loss_fn()` returns the `[K]` task losses. Uses nested tapes:
    `∇_θ Σ_i ⟨g_i(θ), stop(S − g_i)⟩ = Σ_i H_i (S − g_i)`.
    """
    with tf.GradientTape() as outer:
        with tf.GradientTape(persistent=True) as inner:
            task_losses = tf.unstack(loss_fn())  # sliced on the tape, or they are unconnected
        grads = [
            tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(
                loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)], 0)
            for loss in task_losses
        ]
        total = tf.stop_gradient(tf.add_n(grads))
        pairing = tf.add_n([tf.reduce_sum(g * (total - tf.stop_gradient(g))) for g in grads])
    del inner
    hvp = outer.gradient(pairing, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return tf.concat([tf.reshape(h, [-1]) for h in hvp], 0)


@register("cograd")
class CoGrad(Balancer):
    """Coordinated gradients that maximise inter-task transference.

    Yang et al., "Gradient Coordination for Quantifying and Maximizing Knowledge Transference in
    Multi-Task Learning", SIGIR 2023 (arXiv 2303.05847). The transference from task j to task i is
    the loss reduction of i after a step on j: `T_{j→i}(θ) = L_i(θ) − L_i(θ − η g_j)`. To first
    order in η its gradient is `∇T_{j→i} ≈ η (H_i g_j + H_j g_i)` (= `η ∇⟨g_i, g_j⟩`). CoGrad adds
    `−γ Σ_{i≠j} ∇T_{j→i}` to the summed task gradients, i.e. descends `Σ_k L_k − γ Σ_{i≠j} T_{j→i}`:

        g = Σ_k g_k − γ η Σ_{i≠j} (H_i g_j + H_j g_i) = S − 2 γ η Σ_i H_i (S − g_i),  S = Σ_k g_k

    (the pairwise sum collapses to K Hessian-vector products, and the exact mode does them in one).

    `hessian="fisher_diag"` (default) uses the empirical-Fisher diagonal `H_i ≈ diag(g_i ⊙ g_i)`, so
    the whole correction comes from the gradient matrix with no extra backward pass.
    `hessian="exact"` asks the model for true Hessian-vector products through nested tapes (an extra
    forward and two backward passes per step; parameter level, dense parameters only), so the
    approximation can be compared with the real thing.

    The paper's text was not available to us line by line: this follows the transference definition
    and first-order gradient above; `eta` (the look-ahead step) and `gamma` have our defaults, not
    published ones — only their product matters to first order. Parameter level only (H is a
    Hessian w.r.t. shared parameters); embedding tables left out of the matrix get the plain sum.
    Heads get their own task's gradient.
    """

    supported_levels = ("parameters",)
    default_level = "parameters"

    def __init__(self, gamma: float = 0.1, eta: float = 1.0, hessian: str = "fisher_diag",
                 **kwargs):
        super().__init__(**kwargs)
        self.check_choice("hessian", hessian, HESSIANS)
        self.gamma = self.check_range("gamma", gamma, 0.0)
        self.eta = self.check_range("eta", eta, 0.0)
        if self.eta == 0.0:
            raise ValueError("cograd eta (the look-ahead step) must be > 0.")
        self.hessian = hessian

    @property
    def needs_hessian_term(self) -> bool:  # type: ignore[override]
        return self.hessian == "exact"

    def hessian_term(self, matrix, context) -> tf.Tensor:
        total = tf.reduce_sum(matrix, axis=0)
        if self.hessian == "fisher_diag":
            return tf.reduce_sum(tf.square(matrix) * (total[None, :] - matrix), axis=0)
        if context.hessian_term is None:
            raise ValueError("cograd(hessian='exact') needs the model's Hessian-vector product; "
                             "use it inside MultiTaskModel.")
        return context.hessian_term

    def balance(self, matrix, losses, context):
        total = tf.reduce_sum(matrix, axis=0)
        combined = total - 2.0 * self.gamma * self.eta * self.hessian_term(matrix, context)
        ones = tf.ones([self.num_tasks], tf.float32)
        return BalanceResult(combined, ones, ())

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "eta": self.eta,
                "hessian": self.hessian}
