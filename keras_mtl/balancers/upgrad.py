"""UPGrad (Quinton & Rey, arXiv 2406.16232)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import DualConeWeighting
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import dual_cone_weights


@register("upgrad")
class UPGrad(DualConeWeighting):
    """Unconflicting projection of gradients: each task gradient projected onto the dual cone.

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232, §3:

        A(J) = Σ_i p_i π_J(g_i),     π_J(x) = argmin_{y : Jy ≥ 0} ‖y − x‖

    with preference `p` (default 1/K). By their Proposition 1, `π_J(Jᵀu) = Jᵀv` with
    `v = argmin_{v ≥ u} vᵀGv`, so the weights are `Σ_i v^(i)`, `u^(i) = p_i e_i`; each QP is solved
    exactly (`solvers.dual_cone_weights`). The result has a non-negative inner product with every
    task gradient (to float32 rounding: see `gramian.DualConeWeighting` on TorchJD's
    regularisation, which we leave off by default). TorchJD's published output on
    `[[-4, 1, 1], [6, 1, 1]]` is
    `[0.2929, 1.9004, 1.9004]`, ours too. Exact at the level it is given; any K (the K problems
    share one active-set batch).
    """

    def weights_from_gramian(self, gram, context):
        lower = tf.linalg.diag(self.preference(gram.dtype))
        return tf.reduce_sum(dual_cone_weights(self.conditioned(gram), lower), axis=0), ()
