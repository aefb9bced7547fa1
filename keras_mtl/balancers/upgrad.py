"""UPGrad (Quinton & Rey, arXiv 2406.16232)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import PreferenceWeighting
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import dual_cone_weights


class DualConeWeighting(PreferenceWeighting):
    """Shared machinery of the dual-cone projections.

    TorchJD divides the Gramian by its trace, zeroes it when the trace is below `norm_eps` and adds
    `reg_eps · I` before solving. Both change the answer: the ridge pulls the weights towards the
    preference, so the result can conflict with a task whose gradient is short relative to the
    others (cosine −0.18 on a 3-task matrix of mixed scales), and an absolute trace threshold
    zeroes small but meaningful Gramians. Our solver needs neither (it equilibrates the problem,
    `solvers.dual_cone_weights`), so both default to 0: the projection is exact and the
    no-conflict guarantee holds up to float32 rounding of the Gramian — `⟨g_i, d⟩ ≥ −1e-6 ‖g_i‖‖d‖`
    is what the tests check at scales 1e-8 … 1e8 and norm ratios up to 1e8. Set
    `reg_eps=1e-4, norm_eps=1e-4` for TorchJD's outputs.
    """

    def __init__(self, pref_vector=None, norm_eps: float = 0.0, reg_eps: float = 0.0,
                 **kwargs):
        super().__init__(pref_vector=pref_vector, **kwargs)
        self.norm_eps = self.check_range("norm_eps", norm_eps, 0.0)
        self.reg_eps = self.check_range("reg_eps", reg_eps, 0.0)

    def conditioned(self, gram):
        if self.norm_eps == 0.0 and self.reg_eps == 0.0:
            return gram
        trace = tf.linalg.trace(gram)
        normalized = gram / tf.where(trace > 0, trace, tf.ones_like(trace))
        normalized = tf.where(trace <= self.norm_eps, tf.zeros_like(gram), normalized)
        return normalized + self.reg_eps * tf.eye(self.num_tasks, dtype=gram.dtype)

    def get_config(self):
        return {**super().get_config(), "norm_eps": self.norm_eps, "reg_eps": self.reg_eps}


@register("upgrad")
class UPGrad(DualConeWeighting):
    """Unconflicting projection of gradients: each task gradient projected onto the dual cone.

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232, §3:

        A(J) = Σ_i p_i π_J(g_i),     π_J(x) = argmin_{y : Jy ≥ 0} ‖y − x‖

    with preference `p` (default 1/K). By their Proposition 1, `π_J(Jᵀu) = Jᵀv` with
    `v = argmin_{v ≥ u} vᵀGv`, so the weights are `Σ_i v^(i)`, `u^(i) = p_i e_i`; each QP is solved
    exactly (`solvers.dual_cone_weights`). The result has a non-negative inner product with every
    task gradient (to float32 rounding: see `DualConeWeighting` on TorchJD's regularisation, which
    we leave off by default). TorchJD's published output on `[[-4, 1, 1], [6, 1, 1]]` is
    `[0.2929, 1.9004, 1.9004]`, ours too. Exact at the level it is given; any K (the K problems
    share one active-set batch).
    """

    def weights_from_gramian(self, gram, context):
        lower = tf.linalg.diag(self.preference(gram.dtype))
        return tf.reduce_sum(dual_cone_weights(self.conditioned(gram), lower), axis=0), ()
