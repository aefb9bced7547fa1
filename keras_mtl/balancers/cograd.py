"""CoGrad (Yang et al., SIGIR 2023)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Balancer, BalanceResult
from keras_mtl.balancers.registry import register

HESSIANS = ("fisher_diag", "exact")


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

    def reduce(self, gradients, context):
        if self.hessian == "exact":
            if gradients.hessian_term is None:
                raise ValueError("cograd(hessian='exact') needs the exact Hessian term "
                                 "(TaskGradients.hessian_term); train it in MultiTaskModel.")
            return self._result(gradients.matrix, gradients.hessian_term)
        return super().reduce(gradients, context)

    def balance(self, matrix, losses, context):
        if self.hessian == "exact":
            raise ValueError("cograd(hessian='exact') needs the model's Hessian-vector products, "
                             "which a bare matrix does not carry; use it inside MultiTaskModel.")
        total = tf.reduce_sum(matrix, axis=0)
        fisher_term = tf.reduce_sum(tf.square(matrix) * (total[None, :] - matrix), axis=0)
        return self._result(matrix, fisher_term)

    def _result(self, matrix, hessian_term) -> BalanceResult:
        total = tf.reduce_sum(matrix, axis=0)
        combined = total - 2.0 * self.gamma * self.eta * hessian_term
        return BalanceResult(combined, tf.ones([self.num_tasks], tf.float32), ())

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "eta": self.eta,
                "hessian": self.hessian}
