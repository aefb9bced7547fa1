"""PE-LTR (Lin et al., RecSys 2019): Pareto-efficient weights with lower bounds."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import GramianWeighting
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import simplex_qp


@register("pe_ltr")
class PELTR(GramianWeighting):
    """Pareto-stationary weights with a lower bound on each task's weight.

    Lin et al., "A Pareto-Efficient Algorithm for Multiple Objective Optimization in E-Commerce
    Recommendation", RecSys 2019, §4 (the PE-LTR algorithm; TorchEasyRec's
    `use_pareto_loss_weight`): with bounds `c_k ≥ 0`, `Σ_k c_k < 1` (`lower_bounds`),

        w* = argmin_w ‖Σ_k w_k g_k‖²   s.t.  Σ_k w_k = 1,  w_k ≥ c_k,        g = Σ_k w*_k g_k

    a Pareto-stationary direction in which no task's weight falls below its bound (all
    `c_k = 0`: MGDA). The paper's PECsolver solves the relaxed problem (the bounds dropped, a
    closed-form linear solve) and then projects that solution onto the feasible set by a
    non-negative least-squares step, which is the optimum only when the projection is exact. We
    solve the constrained QP exactly: with `s = 1 − Σc` and `w = c + s·u`, `u` ranges over the
    simplex and

        u* = argmin_{u ∈ simplex} ½ uᵀGu + (Gc / s)ᵀu

    (the objective divided by 2s²), solved in-graph by the active-set simplex solver shared with
    MGDA and CAGrad (`solvers.simplex_qp`, on the equilibrated Gramian: scale-free, any K). A task
    with a zero gradient keeps its bound `w_k = c_k` (it is left out of `u`, as in MGDA); when
    every gradient is zero `u` is uniform. The weights sum to 1, as MGDA's.

    `lower_bounds`: one number for every task, or one per task (default 0: MGDA). Their sum must
    stay below 1, checked when the balancer meets the model's tasks.
    """

    def __init__(self, lower_bounds=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(lower_bounds, int | float):
            self.lower_bounds = self.check_range("lower_bounds", lower_bounds, 0.0, 1.0,
                                                 high_open=True)
        else:
            self.lower_bounds = self.check_finite_list("lower_bounds", lower_bounds, low=0.0)

    def bounds(self, num_tasks: int) -> list[float]:
        if isinstance(self.lower_bounds, float):
            return [self.lower_bounds] * num_tasks
        return list(self.lower_bounds)

    def build_state(self, num_tasks):
        bounds = self.bounds(num_tasks)
        if len(bounds) != num_tasks:
            raise ValueError(f"pe_ltr lower_bounds has {len(bounds)} entries for {num_tasks} "
                             "tasks.")
        if sum(bounds) >= 1.0:
            raise ValueError(
                f"pe_ltr lower_bounds must sum to less than 1 (the weights sum to 1), got "
                f"Σ lower_bounds = {sum(bounds):g} for {num_tasks} tasks ({bounds}).")

    def weights_from_gramian(self, gram, context):
        c = tf.constant(self.bounds(self.num_tasks), gram.dtype)
        free = 1.0 - tf.reduce_sum(c)
        u = simplex_qp(gram, tf.linalg.matvec(gram, c) / free)
        return c + free * u, ()

    def get_config(self):
        return {**super().get_config(), "lower_bounds": self.lower_bounds}
