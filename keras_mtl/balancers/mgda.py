"""MGDA (Désidéri 2012; Sener & Koltun, NeurIPS 2018)."""

from __future__ import annotations

from keras_mtl.balancers.gramian import GramianWeighting
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import min_norm_weights


@register("mgda")
class MGDA(GramianWeighting):
    """Multiple-gradient descent: the minimum-norm point of the convex hull of task gradients.

    Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective optimization", 2012;
    Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018, eq. 3:

        w* = argmin_{w ≥ 0, Σw = 1} ‖Σ_k w_k g_k‖² = argmin wᵀ G w,        g = Σ_k w*_k g_k

    The direction has a non-negative inner product with every task gradient (zero only at a Pareto
    stationary point). Scale: the weights sum to 1 (TorchJD's convention: its published output on
    `[[-4, 1, 1], [6, 1, 1]]` is `[0, 1, 1]`, ours too), so the step is about 1/K of `ew`'s.
    `level="representation"` is Sener & Koltun's MGDA-UB (gradients w.r.t. the shared
    representation, an upper bound of the parameter-level problem). Solved exactly in-graph by an
    active-set method on the equilibrated problem (`solvers.min_norm_weights`), so the answer does
    not depend on the gradients' scale (1e-8 … 1e8 tested) and any K works. Tasks with a zero
    gradient (no labelled rows in the batch) are left out of the hull: the literal min-norm point
    would be 0 and stop the shared update on every such batch.
    """

    def weights_from_gramian(self, gram, context):
        return min_norm_weights(gram), ()


@register("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB (Sener & Koltun, NeurIPS 2018, §3.3): MGDA on the gradients w.r.t. the shared
    representation, whose min-norm problem upper-bounds the parameter-level one (their Theorem 1)
    at the cost of the heads only. Same as `mgda` with `level="representation"`, under its own name.
    """

    supported_levels = ("representation",)
    default_level = "representation"
