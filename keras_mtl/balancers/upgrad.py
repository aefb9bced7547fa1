"""UPGrad (Quinton & Rey, arXiv 2406.16232)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import PreferenceWeighting
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import check_num_tasks, dual_cone_weights, normalize_gramian


class DualConeWeighting(PreferenceWeighting):
    """Shared machinery of the dual-cone projections: Gramian normalisation and regularisation
    (TorchJD's `normalize` and `regularize`) before the exact projection."""

    def __init__(self, pref_vector=None, norm_eps: float = 1e-12, reg_eps: float = 1e-4,
                 **kwargs):
        super().__init__(pref_vector=pref_vector, **kwargs)
        self.norm_eps = self.check_range("norm_eps", norm_eps, 0.0)
        self.reg_eps = self.check_range("reg_eps", reg_eps, 0.0)

    def build_state(self, num_tasks):
        check_num_tasks(self.name_in_registry, num_tasks)
        super().build_state(num_tasks)

    def conditioned(self, gram):
        regularized = normalize_gramian(gram, self.norm_eps)
        return regularized + self.reg_eps * tf.eye(self.num_tasks, dtype=gram.dtype)

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
    task gradient. As in TorchJD, the Gramian is divided by its trace and `reg_eps · I` is added
    before solving (TorchJD's defaults, except `norm_eps`: TorchJD zeroes Gramians whose trace is
    below 1e-4, an absolute threshold that mean-reduced recommender losses fall under; ours only
    zeroes a zero Gramian). TorchJD's published output on `[[-4, 1, 1], [6, 1, 1]]` is
    `[0.2929, 1.9004, 1.9004]`, ours too. Exact at the level it is given; K ≤ 12.
    """

    def weights_from_gramian(self, gram, context):
        lower = tf.linalg.diag(self.preference(gram.dtype))
        return tf.reduce_sum(dual_cone_weights(self.conditioned(gram), lower), axis=0), ()
