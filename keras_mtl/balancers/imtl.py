"""IMTL-G and IMTL-L (Liu et al., ICLR 2021)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.gramian import GramianWeighting, pseudo_inverse
from keras_mtl.balancers.learned import AdamParameter
from keras_mtl.balancers.registry import register


@register("imtl_g")
class IMTLG(GramianWeighting):
    """Impartial MTL, gradient part: the update has equal projections on every unit task gradient.

    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021, §3.2: find `g = Σ_k α_k g_k` with
    `Σ α_k = 1` and `⟨g, u_1⟩ = … = ⟨g, u_K⟩` (`u_k = g_k/‖g_k‖`), in closed form
    `α_{2:K} = g_1 Uᵀ (D Uᵀ)⁻¹`, `D = [g_1 − g_k]_k`, `U = [u_1 − u_k]_k`, `α_1 = 1 − Σ_{k≥2} α_k`.
    Every term is an entry of the Gramian. A pseudo-inverse keeps it finite when `D Uᵀ` is singular
    (parallel gradients, or a task with a zero gradient, whose unit vector is taken as 0).
    Scale: α sums to 1, like TorchJD's IMTL-G (its published output on `[[-4, 1, 1], [6, 1, 1]]`
    is `[0.0767, 1, 1]`, ours too).
    """

    def alphas(self, gram):
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        inv = tf.math.divide_no_nan(tf.ones_like(norms), norms)
        # ⟨g_a − g_b, u_c − u_d⟩ from G: G[a,c]/n_c − G[a,d]/n_d − G[b,c]/n_c + G[b,d]/n_d.
        scaled = gram * inv[None, :]  # ⟨g_a, u_c⟩
        first = scaled[0]  # ⟨g_1, u_c⟩
        g1_u = first[0] - first[1:]  # g_1 · (u_1 − u_k), k ≥ 2
        d_u = ((scaled[0:1, 0:1] - scaled[0:1, 1:]) - (scaled[1:, 0:1] - scaled[1:, 1:]))
        alpha_rest = tf.linalg.matvec(pseudo_inverse_general(d_u), g1_u, transpose_a=True)
        alpha = tf.concat([[1.0 - tf.reduce_sum(alpha_rest)], alpha_rest], axis=0)
        return alpha

    def weights_from_gramian(self, gram, context):
        return self.alphas(gram), ()


def pseudo_inverse_general(matrix: tf.Tensor) -> tf.Tensor:
    """Pseudo-inverse of a square, possibly non-symmetric matrix: `(AᵀA)⁺ Aᵀ`."""
    return tf.matmul(pseudo_inverse(tf.matmul(matrix, matrix, transpose_a=True)), matrix,
                     transpose_b=True)


@register("imtl_l")
class IMTLL(Weighting):
    """Impartial MTL, loss part: learned scales that make every scaled loss equal to 1.

    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021, §3.3:

        L = Σ_k e^{s_k} L_k − s_k,     w_k = e^{s_k},     ∂L/∂s_k = e^{s_k} L_k − 1

    so at the optimum `e^{s_k} L_k = 1` for every task. `s` starts at 0 and is learned by Adam
    (`learning_rate`, default 1e-3; the paper and LibMTL use the model's optimizer) on the same
    step's losses; the weights used at a step are those before its update.
    """

    def __init__(self, learning_rate: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.learning_rate = self.check_range("learning_rate", learning_rate, 0.0)

    def build_state(self, num_tasks):
        self.scale = AdamParameter(self, "log_scale", (num_tasks,), 0.0, self.learning_rate)

    def task_weights(self, losses, context, matrix=None):
        s = self.scale.value
        value, updates = self.scale.step(tf.exp(s) * tf.stop_gradient(losses) - 1.0)
        return tf.exp(s), ((self.scale.value, value), *updates)

    def get_config(self):
        return {**super().get_config(), "learning_rate": self.learning_rate}
