"""IMTL-G and IMTL-L (Liu et al., ICLR 2021)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.gramian import GramianWeighting
from keras_mtl.balancers.learned import AdamParameter
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import unit_gradient_pseudo_solve


@register("imtl_g")
class IMTLG(GramianWeighting):
    """Impartial MTL, gradient part: the update has equal projections on every unit task gradient.

    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021, §3.2: find `g = Σ_k α_k g_k` with
    `Σ α_k = 1` and `⟨g, u_1⟩ = … = ⟨g, u_K⟩` (`u_k = g_k/‖g_k‖`), in closed form
    `α_{2:K} = g_1 Uᵀ (D Uᵀ)⁻¹`, `D = [g_1 − g_k]_k`, `U = [u_1 − u_k]_k`, `α_1 = 1 − Σ_{k≥2} α_k`.
    Equivalently (substitute `α_i = β_i/‖g_i‖`, so `g = Ûᵀβ` and the conditions read `Ĝβ = t·1`
    with `Ĝ = ÛÛᵀ` the correlation matrix): `β ∝ Ĝ⁺1`, scaled so that `Σ α = 1`. That is the form
    solved here (`solvers.unit_gradient_pseudo_solve`): scale-free per task, so gradients
    whose norms differ by 1e8 are balanced as exactly as equal ones, and with more tasks than
    independent directions it is the least-squares solution (the closed form above, taken with
    task 1 as reference, breaks down when task 1's gradient is zero, and with a pseudo-inverse cut
    at float64 rounding it returned ≈ 0 whenever K > rank). A task with a zero gradient (no
    labelled rows in the batch) gets weight 0 and the others are balanced among themselves; it
    used to zero the whole update. Scale: α sums to 1, like TorchJD's IMTL-G (its published
    output on `[[-4, 1, 1], [6, 1, 1]]` is `[0.0767, 1, 1]`, ours too).
    """

    def alphas(self, gram):
        alpha = unit_gradient_pseudo_solve(gram, tf.ones([self.num_tasks], gram.dtype))
        total = tf.reduce_sum(alpha)
        return tf.where(tf.abs(total) > 0, alpha / tf.where(tf.abs(total) > 0, total, 1.0),
                        tf.zeros_like(alpha))

    def weights_from_gramian(self, gram, context):
        return self.alphas(gram), ()


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
