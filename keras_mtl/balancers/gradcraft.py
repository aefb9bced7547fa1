"""GradCraft (Bai et al., KDD 2024)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import BalanceResult, Weighting
from keras_mtl.balancers.linalg import gramian, pseudo_inverse, weighted_sum
from keras_mtl.balancers.registry import register

REDUCTIONS = ("mean", "sum")


@register("gradcraft")
class GradCraft(Weighting):
    """Magnitude alignment to the largest gradient, then global deconfliction of directions.

    Bai et al., "GradCraft: Elevating Multi-task Recommendations through Holistic Gradient
    Crafting", KDD 2024 (arXiv 2407.19682), §3:

    1. magnitude: `ĝ_i = τ·(max_j ‖g_j‖ / ‖g_i‖)·g_i + (1 − τ)·g_i`;
    2. global deconfliction, each task against *all* tasks it conflicts with at once: with `G_i`
       the stack of the `ĝ_k` where `⟨ĝ_i, ĝ_k⟩ < 0`,
       `g̃_i = ĝ_i + G_iᵀ w`, `w = (G_i G_iᵀ)⁻¹ (−G_i ĝ_i + z)`, `z_k = ε‖ĝ_i‖‖ĝ_k‖`,
       so that afterwards `⟨g̃_i, ĝ_k⟩ = ε‖ĝ_i‖‖ĝ_k‖ ≥ 0` for every k that conflicted with i;
    3. `g = mean_i g̃_i` (`reduction="mean"`, the paper and official code) or `Σ_i g̃_i`
       (`reduction="sum"`, the scale of plain summed-loss training).

    Every quantity is a function of the Gramian `J Jᵀ` (K×K), so the whole method costs one
    Gramian plus K small solves, and `g = u @ J` for a weight vector `u`.

    Where we depart from the official code (baiyimeng/GradCraft, `GlobalPCGradMagnitudePositive`):
    - it balances *all* parameters the optimizer holds (towers and embeddings included); here only
      shared parameters, or the representation when `level="representation"`. Embedding tables at
      the parameter level are left out of the matrix unless densified, and get `u`-weighted task
      gradients.
    - it inverts `G_i G_iᵀ` with `torch.inverse`, which fails or explodes for linearly dependent
      conflicting gradients; here a pseudo-inverse (eigen-decomposition with cut-off `rcond`).
    - its norm EMA (`mag_old`, factor `b`) is kept as `beta` (default 0: the paper's current
      norms); its `'sum'` reduction branch is unreachable (`if self._reduction:` is true for
      `'mean'`), so the official code always averages: our default too.
    Task-specific parameters get their own task's gradient (weights 1), as in the official code.
    Defaults τ = 1, ε = 0 (the paper tunes τ ∈ {0, …, 1}, ε ∈ {1e-10, 1e-9, 1e-8}).
    """

    supported_levels = ("parameters", "representation")
    default_level = "parameters"
    # A weighting from the Gramian, but not a `GramianWeighting`: its norms (and their EMA, a
    # state variable) come from the Gramian in the matrix's dtype, not float64, and its block path
    # materialises the matrix; `GramianWeighting`'s float64 and block Gramians would move its
    # results in the last bits.
    needs_matrix = True

    def __init__(self, tau: float = 1.0, epsilon: float = 0.0, beta: float = 0.0,
                 reduction: str = "mean", rcond: float = 1e-10, **kwargs):
        super().__init__(**kwargs)
        self.tau = self.check_range("tau", tau, 0.0, 1.0)
        self.epsilon = self.check_range("epsilon", epsilon, 0.0)
        self.beta = self.check_range("beta", beta, 0.0, 1.0, high_open=True)
        self.check_choice("reduction", reduction, REDUCTIONS)
        self.reduction = reduction
        self.rcond = self.check_range("rcond", rcond, 0.0)

    def build_state(self, num_tasks):
        self.magnitudes = self.add_weight(shape=(num_tasks,), initializer="zeros",
                                          trainable=False, name="magnitudes")

    def coefficients(self, gram: tf.Tensor, magnitudes: tf.Tensor) -> tf.Tensor:
        """`C` with `g̃ = C @ J` (rows: the deconflicted task gradients), from the Gramian."""
        gram = tf.cast(gram, tf.float64)
        magnitudes = tf.cast(magnitudes, tf.float64)
        scale = (self.tau * tf.math.divide_no_nan(tf.reduce_max(magnitudes), magnitudes)
                 + (1.0 - self.tau))
        scaled = gram * scale[:, None] * scale[None, :]  # Gramian of the ĝ
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(scaled), 0.0))
        conflict = tf.cast(scaled < 0.0, tf.float64)  # [i, k]: ĝ_k conflicts with ĝ_i
        # For every i at once: the conflicting block of the Gramian, identity elsewhere.
        systems = (conflict[:, :, None] * conflict[:, None, :] * scaled[None]
                   + tf.linalg.diag(1.0 - conflict))
        targets = conflict * (-scaled + self.epsilon * norms[:, None] * norms[None, :])
        # Pseudo-inverse: linearly dependent conflicting rows give the minimum-norm solution.
        w = tf.linalg.matvec(pseudo_inverse(systems, self.rcond), targets)  # [i, k]
        # g̃_i = ĝ_i + Σ_k w_ik ĝ_k and ĝ_k = s_k g_k.
        return (tf.eye(tf.shape(scaled)[0], dtype=tf.float64) + w) * scale[None, :]

    def deconflicted(self, matrix: tf.Tensor, magnitudes: tf.Tensor | None = None) -> tf.Tensor:
        """The `[K, D]` deconflicted gradients g̃ (for inspection and tests)."""
        gram = gramian(matrix)
        if magnitudes is None:
            magnitudes = tf.sqrt(tf.linalg.diag_part(gram))
        return tf.matmul(tf.cast(self.coefficients(gram, magnitudes), matrix.dtype), matrix)

    def balance(self, matrix, losses, context):
        gram = gramian(matrix)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        if self.beta > 0:
            magnitudes = self.beta * self.magnitudes + (1.0 - self.beta) * norms
        else:
            magnitudes = norms
        weights = tf.reduce_sum(self.coefficients(gram, magnitudes), axis=0)
        if self.reduction == "mean":
            weights = weights / self.num_tasks
        weights = tf.cast(weights, matrix.dtype)
        combined = weighted_sum(matrix, weights)
        ones = tf.ones([self.num_tasks], tf.float32)
        return BalanceResult(combined, ones, ((self.magnitudes, magnitudes),),
                             shared_weights=weights)

    def get_config(self):
        return {**super().get_config(), "tau": self.tau, "epsilon": self.epsilon,
                "beta": self.beta, "reduction": self.reduction, "rcond": self.rcond}
