"""SDMGrad (Xiao et al., NeurIPS 2023): direction-oriented MGDA."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import GramianWeighting
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import simplex_qp


@register("sdmgrad")
class SDMGrad(GramianWeighting):
    """Direction-oriented multi-objective gradient: MGDA regularised towards the mean direction.

    Xiao et al., "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
    Algorithms", NeurIPS 2023, eqs. 4-6: with `g0 = (1/K) Σ_k g_k` and regularisation `λ`
    (`lamda`, default 0.3 as in LibMTL),

        w* = argmin_{w ∈ simplex} ½ ‖g_w + λ g0‖²,       g_w = Σ_k w_k g_k
        d  = (g_w* + λ g0) / (1 + λ)

    λ = 0 is MGDA; λ → ∞ the mean gradient. In Gramian form the problem is
    `min_{w ∈ simplex} ½ wᵀGw + λ (G·1/K)ᵀw`, solved exactly in-graph by the active-set simplex
    solver (`solvers.simplex_qp`: equilibrated, any K); `d = ((w* + λ/K) / (1 + λ)) @ J`.

    Differences from the paper's stochastic algorithm and LibMTL (which follows the official
    code): they estimate `w*` by 20 projected-SGD steps (learning rate 5, momentum 0.5, warm
    started across training steps) on a Gramian of two *independent* mini-batches, so that
    the stochastic estimate is unbiased, and combine a third batch's gradients. Our step holds one
    batch, so the three samples are the same and `w*` is the exact solution of the sub-problem
    on it (the paper's deterministic SDMGrad). The objective-sampling variant (SDMGrad-OS) is not
    included. A task with a zero gradient is left out of the simplex (as in MGDA) but still
    counts in `g0`.
    """

    def __init__(self, lamda: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.lamda = self.check_range("lamda", lamda, 0.0)

    def weights_from_gramian(self, gram, context):
        mean = tf.fill([self.num_tasks], tf.constant(1.0 / self.num_tasks, gram.dtype))
        w = simplex_qp(gram, self.lamda * tf.linalg.matvec(gram, mean))
        return (w + self.lamda * mean) / (1.0 + self.lamda), ()

    def get_config(self):
        return {**super().get_config(), "lamda": self.lamda}
