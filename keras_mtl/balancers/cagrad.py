"""CAGrad (Liu et al., NeurIPS 2021)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import GramianWeighting
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import QPState, SimplexProblem

RESCALES = (0, 1, 2)


@register("cagrad")
class CAGrad(GramianWeighting):
    """Conflict-averse gradient descent: the best worst-case task improvement near the mean gradient.

    Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021,
    Algorithm 1: with `g0` the mean gradient and `φ = c²‖g0‖²`,

        w* = argmin_{w ∈ simplex} g_wᵀ g0 + √φ ‖g_w‖,    g_w = Σ_i w_i g_i
        d  = g0 + (√φ / ‖g_w*‖) g_w*

    which maximises `min_i ⟨g_i, d⟩` over the ball `‖d − g0‖ ≤ c‖g0‖`. The official code then
    divides `d` by `1 + c²` (`rescale=1`, our default), by `1 + c` (`rescale=2`) or not at all
    (`rescale=0`: TorchJD's convention; its published output for c = 0.5 on
    `[[-4, 1, 1], [6, 1, 1]]`, `[0.1835, 1.2041, 1.2041]`, is ours with `rescale=0`).

    Solver (ours; the official code calls scipy's SLSQP, TorchJD cvxpy): at the optimum with
    `ρ = ‖g_w*‖ > 0`, `w*` also solves the QP `min_w ρ g0ᵀg_w + ½√φ ‖g_w‖²` over the simplex (same
    KKT conditions), whose solution norm `h(ρ)` is non-decreasing in ρ; so `ρ` is the fixed point
    `h(ρ) = ρ` in `[0, max_i ‖g_i‖]`, found by bisection (64 halvings: below float64 resolution)
    with each QP solved exactly by the active-set solver (`solvers.SimplexProblem`), warm-started
    from the previous halving's solution, so most halvings cost one linear solve.
    When `‖g_w*‖` vanishes (a Pareto-stationary point, e.g. a task with a zero gradient in the
    hull) the update is `g0`, as the official code's `c / (‖g_w‖ + 1e-4)` gives, not TorchJD's
    zero. Weights are taken on the trace-normalised Gramian (the weights are scale-free). Any K.
    """

    def __init__(self, c: float = 0.4, rescale: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.c = self.check_range("c", c, 0.0)
        self.check_choice("rescale", rescale, RESCALES)
        self.rescale = int(rescale)

    def weights_from_gramian(self, gram, context):
        num_tasks = self.num_tasks
        mean = tf.fill([num_tasks], tf.constant(1.0 / num_tasks, gram.dtype))
        if self.c > 0:
            trace = tf.linalg.trace(gram)
            g = gram / tf.where(trace > 0, trace, tf.ones_like(trace))
            toward_mean = tf.linalg.matvec(g, mean)  # ⟨g_i, g0⟩
            sqrt_phi = self.c * tf.sqrt(tf.maximum(tf.reduce_sum(toward_mean * mean), 0.0))
            qp = SimplexProblem(sqrt_phi * g)

            def norm_at(rho, start):
                state = qp.solve_state(rho * toward_mean, start)
                w = qp.weights(state)
                return state, w, tf.sqrt(tf.maximum(tf.einsum("k,kl,l->", w, g, w), 0.0))

            def halve(low, high, point, free):
                middle = 0.5 * (low + high)
                state, _, norm = norm_at(middle, QPState(point, free))
                above = norm > middle
                return (tf.where(above, middle, low), tf.where(above, high, middle),
                        state.point, state.free)

            high = tf.sqrt(tf.reduce_max(tf.linalg.diag_part(g)))
            start = qp.start()
            low, high, point, free = tf.while_loop(
                lambda *a: True, halve, (tf.zeros_like(high), high, start.point, start.free),
                maximum_iterations=64)
            _, w, norm = norm_at(high, QPState(point, free))
            usable = (norm > 1e-12) & (sqrt_phi > 0)
            weights = mean + tf.where(usable, sqrt_phi / tf.where(usable, norm, 1.0), 0.0) * w
        else:
            weights = mean
        divisor = {0: 1.0, 1: 1.0 + self.c ** 2, 2: 1.0 + self.c}[self.rescale]
        return weights / divisor, ()

    def get_config(self):
        return {**super().get_config(), "c": self.c, "rescale": self.rescale}
