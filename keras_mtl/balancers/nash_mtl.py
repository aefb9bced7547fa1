"""Nash-MTL (Navon et al., ICML 2022)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import GramianWeighting
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import power_equation_weights


@register("nash_mtl")
class NashMTL(GramianWeighting):
    """Multi-task learning as a bargaining game: the Nash bargaining solution.

    Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022, Theorem 5.1: the update
    `d = Σ_i α_i g_i` with `α > 0` solving

        Gα = 1/α        (element-wise: ⟨g_i, d⟩ α_i = 1)

    so every task's improvement is inversely proportional to its weight. The official code
    approximates it with up to 20 cvxpy/ECOS sequential convex problems; here it is solved to
    convergence by Newton's method on its convex potential (`solvers.power_equation_weights`,
    on the equilibrated Gramian — the correlation matrix of the task gradients — so badly scaled
    tasks are solved as exactly as equal ones; no ridge by default (`regularization` adds
    one: the Newton system is regular without it, and a ridge of 1e-12 already moved the answer
    by 1e-6 for nearly opposite tasks), and tasks with a zero gradient get weight 0). As in the official
    code and TorchJD, the update is scaled down when `‖d‖ > max_norm` (default 1; 0 disables) —
    the norm is that of the balanced gradient: the shared parameters at the parameter level, the
    representation gradient at the representation level. TorchJD's published output on
    `[[-4, 1, 1], [6, 1, 1]]`, `[0.0542, 0.7061, 0.7061]`, is ours. The official
    `update_weights_every` is the generic wrapper: `balancers.get("nash_mtl", every=k)`.
    """

    def __init__(self, max_norm: float = 1.0, regularization: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.max_norm = self.check_range("max_norm", max_norm, 0.0)
        self.regularization = self.check_range("regularization", regularization, 0.0)

    def weights_from_gramian(self, gram, context):
        alpha = power_equation_weights(gram, 1.0, self.regularization)
        if self.max_norm > 0:
            norm = tf.sqrt(tf.maximum(tf.einsum("k,kl,l->", alpha, gram, alpha), 0.0))
            alpha = tf.where(norm > self.max_norm, alpha * self.max_norm / norm, alpha)
        return alpha, ()

    def get_config(self):
        return {**super().get_config(), "max_norm": self.max_norm,
                "regularization": self.regularization}
