"""ConFIG (Liu et al., ICLR 2025)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import PreferenceWeighting
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import unit_gradient_pseudo_solve


@register("config")
class ConFIG(PreferenceWeighting):
    """Conflict-free inverse gradients: one direction at equal angle to every task gradient.

    Liu et al., "ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks",
    ICLR 2025, eq. 2: with unit task gradients `û_i = g_i / ‖g_i‖` stacked in `Û`,

        d = (Σ_i ⟨g_i, e⟩) e,        e = Û⁺ p / ‖Û⁺ p‖

    (`p` a preference vector, default all ones: the same cosine to every task). As a Gramian
    weighting: `Û⁺ = Ûᵀ(ÛÛᵀ)⁺` and `ÛÛᵀ = N⁻¹GN⁻¹` (`N = diag ‖g_i‖`), so
    `d = Jᵀ c`, `c ∝ N⁻¹ (N⁻¹GN⁻¹)⁺ p`. A zero task gradient has a zero unit vector, as in the
    official code (`nan_to_num`); with more tasks than independent directions `Û⁺p` is the
    least-squares solution, as the official `torch.linalg.pinv` gives (see
    `unit_gradient_pseudo_solve` for the rank cut-off). TorchJD's published output on
    `[[-4, 1, 1], [6, 1, 1]]`, `[0.1588, 2.0706, 2.0706]`, is ours.
    """

    default_preference = "sum"

    def weights_from_gramian(self, gram, context):
        coefficients = unit_gradient_pseudo_solve(gram, self.preference(gram.dtype))
        length = tf.sqrt(tf.maximum(tf.einsum("k,kl,l->", coefficients, gram, coefficients), 0.0))
        unit = tf.math.divide_no_nan(coefficients, length)
        return tf.reduce_sum(tf.linalg.matvec(gram, unit)) * unit, ()

