"""DualProj (Quinton & Rey, arXiv 2406.16232, as implemented in TorchJD)."""

from __future__ import annotations

from keras_mtl.balancers.gramian import DualConeWeighting
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import dual_cone_weights


@register("dualproj")
class DualProj(DualConeWeighting):
    """The preference-weighted average gradient, projected onto the dual cone of the task gradients.

    `A(J) = π_J(Jᵀp)`, `π_J(x) = argmin_{y : Jy ≥ 0} ‖y − x‖` (TorchJD's `DualProj`; the dual cone
    projection of Quinton & Rey, arXiv 2406.16232, Proposition 1): weights `v = argmin_{v ≥ p} vᵀGv`,
    solved exactly. With `p = 1/K` (default) the update is the mean gradient whenever it conflicts
    with no task; otherwise the closest non-conflicting direction. TorchJD's published output on
    `[[-4, 1, 1], [6, 1, 1]]` is `[0.5563, 1.1109, 1.1109]`, ours too. Exact, without TorchJD's
    regularisation by default (see `gramian.DualConeWeighting`). Any K.
    """

    def weights_from_gramian(self, gram, context):
        preference = self.preference(gram.dtype)[None]
        return dual_cone_weights(self.conditioned(gram), preference)[0], ()
