"""The small convex problems behind Gramian weightings, solved in TensorFlow (XLA-safe, any K).

All work on K×K matrices (K = number of tasks) in float64, never on the gradients themselves:
- `simplex_qp`: `min ½ wᵀQw + bᵀw` over the simplex (MGDA's min-norm point, CAGrad's inner
  problem);
- `dual_cone_weights`: `min vᵀGv` subject to `v ≥ u` (UPGrad, DualProj: the projection of `uᵀJ`
  onto the dual cone of the task gradients);
- `power_equation_weights`: the positive solution of `(Gw)_i = w_i^{-1/α}` (Nash-MTL at α = 1,
  FairGrad);
- `unit_gradient_pseudo_solve`: the least-squares solution on the unit task gradients (IMTL-G,
  ConFIG).

The matrix functions they use (pseudo-inverse, reductions of `J`) are in `linalg`.

**Equilibration.** Every problem is solved on the task-gradient *correlation* matrix
`Ĝ = D⁻¹GD⁻¹` (`D = diag ‖g_i‖`, unit diagonal) with the variables rescaled by `D`, which is
exact for each problem (the constraints and linear terms are rescaled with them). The solvers
therefore see numbers of order 1 whatever the global scale of the gradients (1e-8 … 1e8 are
tested) and however unequal their norms (1e8 : 1 is tested): the float32 Gramian's relative
precision is what limits them, not its range. `Ĝ` is projected onto the positive semi-definite
cone (eigenvalues clipped at 0: a float32 Gramian can be indefinite by rounding) and given a
`RIDGE · I` of 1e-12, which keeps every linear system regular and moves no answer by more than
rounding.

**Tasks with a zero gradient** (a task with no labelled rows in the batch: `‖g_i‖ ≤ 1e-12 ·
max_j ‖g_j‖`) carry no information about the direction; they are left out of each problem — held
at weight 0 (or at their lower bound) — instead of, as the literal formulas would, collapsing
MGDA's min-norm point to zero or making the equations unsolvable.

**The QP solver** is a primal active-set method (Nocedal & Wright, *Numerical Optimization*,
2nd ed., Algorithm 16.3) run on a batch of problems that share one quadratic term: each
iteration solves the equality-constrained problem on the current free set (one bordered
(K+1)×(K+1) linear system), steps towards it until a bound blocks, and at a stationary point
frees the bound with the most negative multiplier. It terminates at the exact optimum of the
(ridged) problem in finitely many iterations — in practice about as many as there are tasks
that change sides — and accepts a warm start (CAGrad's bisection reuses each solution). Its
stopping rule is the KKT conditions, each multiplier's sign decided beyond 1e-12 of the
magnitude of its own terms. The tests (`tests/balancers/exactness_test.py`) check the KKT
residuals of its answers on matrices of K = 2 … 64 tasks, ranks 1 … K, norms spread 1e8 : 1
and scales 1e-8 … 1e8. Cost per iteration: O(K³) for each problem of the batch; there is no
enumeration of active sets and no limit on K.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from keras_mtl.balancers.linalg import pseudo_inverse

RIDGE = 1e-12
ZERO_NORM = 1e-12  # a task gradient shorter than this, relative to the longest, counts as zero
KKT_TOLERANCE = 1e-12
# Eigenvalues of a correlation matrix below this (relative to the largest) are rounding of the
# float32 Gramian (≈ 1e-7 relative), not directions: 100 × float32's epsilon.
PINV_RCOND = 100 * 1.1920929e-07


class Equilibrated(NamedTuple):
    """`G = D Ĝ D` with `Ĝ` the (ridged, positive semi-definite) correlation matrix.

    `norms`: `D`'s diagonal relative to the longest gradient (in (0, 1], 1 for zero tasks);
    `scale`: the longest squared norm, so `G = scale · N Ĝ N` with `N = diag(norms)`;
    `active`: `[K]` bool, False for tasks with a zero gradient (their rows of `Ĝ` are zero).
    """

    correlation: tf.Tensor
    norms: tf.Tensor
    scale: tf.Tensor
    active: tf.Tensor


def equilibrate(gram: tf.Tensor) -> Equilibrated:
    """Splits a Gramian (float64) into scale, per-task norms and correlation matrix."""
    gram = tf.convert_to_tensor(gram)
    num_tasks = int(gram.shape[0])
    diagonal = tf.maximum(tf.linalg.diag_part(gram), 0.0)
    scale = tf.reduce_max(diagonal)
    positive_scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    relative = tf.sqrt(diagonal / positive_scale)
    active = relative > ZERO_NORM
    norms = tf.where(active, relative, tf.ones_like(relative))
    inverse = tf.where(active, 1.0 / norms, tf.zeros_like(norms))
    correlation = gram / positive_scale * inverse[:, None] * inverse[None, :]
    correlation = 0.5 * (correlation + tf.transpose(correlation))
    eigenvalues, vectors = tf.linalg.eigh(correlation)
    correlation = tf.matmul(vectors * tf.maximum(eigenvalues, 0.0)[None], vectors,
                            transpose_b=True)
    mask = tf.cast(active, gram.dtype)
    correlation = (correlation * mask[:, None] * mask[None, :]
                   + RIDGE * tf.eye(num_tasks, dtype=gram.dtype))
    return Equilibrated(correlation, norms, scale, active)


class QPState(NamedTuple):
    """A batch of active-set iterates: points `[B, K]` and their free sets `[B, K]` (bool)."""

    point: tf.Tensor
    free: tf.Tensor


def active_set_qp(quadratic: tf.Tensor, linear: tf.Tensor, start: QPState,
                  fixed: tf.Tensor | None = None, simplex: tf.Tensor | None = None,
                  max_iterations: int | None = None) -> QPState:
    """`argmin_x ½ xᵀHx + cᵀx` subject to `x ≥ 0` (and `aᵀx = 1` when `simplex` is `a > 0`).

    `quadratic` is a positive definite `[K, K]` matrix shared by the batch, `linear` `[B, K]` one
    linear term per problem, `start` a feasible point and free set per problem (a warm start),
    `fixed` `[K]` bool marks variables held at 0 throughout. Nocedal & Wright, Algorithm 16.3; at
    a full step the multipliers `λ = Hx + c + μa` of the bounds held are checked in the same
    iteration, so an iteration either adds a blocking bound or releases every bound whose
    multiplier is negative (or stops).
    """
    num_tasks = int(quadratic.shape[0])
    dtype = quadratic.dtype
    if max_iterations is None:
        max_iterations = 4 * num_tasks + 20
    fixed = tf.zeros([num_tasks], tf.bool) if fixed is None else fixed

    def subproblem(free):
        """The minimiser of the objective with the held bounds as equalities: `[B, K]`, `μ`."""
        f = tf.cast(free, dtype)
        system = f[:, :, None] * f[:, None, :] * quadratic[None] + tf.linalg.diag(1.0 - f)
        rhs = -linear * f
        if simplex is None:
            return tf.linalg.solve(system, rhs[..., None])[..., 0] * f, tf.zeros_like(rhs[:, 0])
        border = f * simplex[None]
        bordered = tf.concat([
            tf.concat([system, border[:, :, None]], axis=2),
            tf.concat([border[:, None, :], tf.zeros_like(border[:, :1, None])], axis=2),
        ], axis=1)
        solution = tf.linalg.solve(bordered, tf.concat([rhs, tf.ones_like(rhs[:, :1])], 1)[..., None])
        return solution[:, :num_tasks, 0] * f, solution[:, num_tasks, 0]

    def body(i, point, free, done):
        target, multiplier = subproblem(free)
        step = target - point
        shrinking = free & (step < 0.0)
        ratios = tf.where(shrinking, point / tf.where(shrinking, -step, 1.0),
                          tf.constant(float("inf"), dtype))
        blocking = tf.argmin(ratios, axis=1, output_type=tf.int32)
        ratio = tf.reduce_min(ratios, axis=1)
        full = ratio >= 1.0
        length = tf.where(full, tf.ones_like(ratio), ratio)
        moved = tf.where(full[:, None], target, point + length[:, None] * step)
        block = tf.one_hot(blocking, num_tasks, on_value=True, off_value=False)
        moved = tf.where(block & ~full[:, None], tf.zeros_like(moved), tf.maximum(moved, 0.0))
        # At the subproblem's minimiser: release every held bound whose multiplier is negative.
        border_term = (tf.zeros_like(linear) if simplex is None
                       else multiplier[:, None] * simplex[None])
        lagrange = tf.linalg.matvec(quadratic, target) + linear + border_term
        # A multiplier counts as negative beyond the rounding of its own terms: componentwise,
        # so tasks whose gradients are 1e8 times shorter than others are decided as exactly.
        rounding = KKT_TOLERANCE * (tf.linalg.matvec(tf.abs(quadratic), tf.abs(target))
                                    + tf.abs(linear) + tf.abs(border_term))
        held = ~free & ~fixed[None]
        # The new subproblem's minimiser is strictly better, so some released variable grows; one
        # that would turn negative blocks at once (a zero step) and is held again, never all of
        # them, so the objective falls strictly between full steps and no free set repeats. One
        # release at a time needs an iteration per freed variable: on a real MMoE K = 32 Gramian
        # (UPGrad's 32 problems) 21 iterations of a batched 32 × 32 solve against 3 (timed by
        # hand under XLA: 54.6 ms against 7.9 ms).
        releasable = held & (lagrange < -rounding)
        optimal = full & ~tf.reduce_any(releasable, axis=1)
        new_free = tf.where(full[:, None], free | releasable, free & ~block)
        # Problems already solved keep their state.
        point = tf.where(done[:, None], point, moved)
        free = tf.where(done[:, None], free, new_free)
        return i + 1, point, free, done | optimal

    done = tf.zeros_like(start.point[:, 0], tf.bool)
    _, point, free, _ = tf.while_loop(
        lambda i, point, free, done: ~tf.reduce_all(done), body,
        (tf.constant(0), start.point, start.free & ~fixed[None], done),
        maximum_iterations=max_iterations)
    return QPState(point, free)


class SimplexProblem:
    """`argmin_{w ≥ 0, Σw = 1} ½ wᵀQw + bᵀw` for a fixed PSD `Q` and any number of `b`.

    Solved on the equilibrated problem: with `Q = s·NQ̂N`, `x = Nw` gives
    `min ½ s xᵀQ̂x + (N⁻¹b)ᵀx` over `x ≥ 0, Σ_i x_i / N_i = 1`. Tasks with a zero row of `Q` are
    held at 0 (when every task is zero, the weights are uniform).
    """

    def __init__(self, quadratic: tf.Tensor):
        self.quadratic = quadratic
        self.num_tasks = int(quadratic.shape[0])
        self.parts = equilibrate(quadratic)
        p = self.parts
        self.simplex = tf.where(p.active, 1.0 / p.norms, tf.zeros_like(p.norms))
        self.any_active = tf.reduce_any(p.active)

    def start(self) -> QPState:
        """The barycentre of the active tasks' vertices, everything free."""
        a = self.simplex
        point = tf.where(self.parts.active, 1.0 / a, 0.0) / tf.maximum(
            tf.reduce_sum(tf.cast(self.parts.active, a.dtype)), 1.0)
        return QPState(point[None], self.parts.active[None])

    def solve_state(self, linear: tf.Tensor, start: QPState) -> QPState:
        p = self.parts
        scale = tf.where(p.scale > 0, p.scale, tf.ones_like(p.scale))
        scaled_linear = tf.where(p.active, linear / p.norms / scale, 0.0)
        return active_set_qp(p.correlation, scaled_linear[None], start, fixed=~p.active,
                             simplex=self.simplex)

    def weights(self, state: QPState) -> tf.Tensor:
        w = tf.where(self.parts.active, tf.maximum(state.point[0], 0.0) / self.parts.norms, 0.0)
        total = tf.reduce_sum(w)
        uniform = tf.fill([self.num_tasks], tf.constant(1.0 / self.num_tasks, w.dtype))
        return tf.where(self.any_active & (total > 0), w / tf.where(total > 0, total, 1.0),
                        uniform)

    def solve(self, linear: tf.Tensor | None = None) -> tf.Tensor:
        if linear is None:
            linear = tf.zeros([self.num_tasks], self.quadratic.dtype)
        return self.weights(self.solve_state(linear, self.start()))


def simplex_qp(quadratic: tf.Tensor, linear: tf.Tensor | None = None) -> tf.Tensor:
    """`argmin_{w ≥ 0, Σw = 1} ½ wᵀQw + bᵀw` (see `SimplexProblem`)."""
    return SimplexProblem(quadratic).solve(linear)


def min_norm_weights(gram: tf.Tensor) -> tf.Tensor:
    """`argmin_{w ∈ simplex} wᵀGw`: the min-norm point of the convex hull of the (non-zero) task
    gradients."""
    return SimplexProblem(gram).solve()


def dual_cone_weights(gram: tf.Tensor, lower: tf.Tensor) -> tf.Tensor:
    """`argmin_v vᵀGv` subject to `v ≥ u`, for each row `u` of `lower` (`[B, K]`).

    By Proposition 1 of Quinton & Rey (arXiv 2406.16232), `vᵀJ` is then the projection of `uᵀJ`
    onto the dual cone `{x : Jx ≥ 0}`; its KKT conditions `Gv = λ ≥ 0`, `λ ⊙ (v − u) = 0` say the
    result never conflicts with a task. With `v = u + N⁻¹x` the problem is the bound-constrained
    `min ½ xᵀĜx + (N⁻¹Gu / s)ᵀx`, `x ≥ 0`, started from `x = 0` with every bound held (the
    answer whenever `uᵀJ` conflicts with no task). A zero-gradient task keeps `v_i = u_i`.
    """
    p = equilibrate(gram)
    lower = tf.convert_to_tensor(lower, gram.dtype)
    scale = tf.where(p.scale > 0, p.scale, tf.ones_like(p.scale))
    linear = tf.where(p.active[None], tf.linalg.matvec(gram, lower) / p.norms / scale, 0.0)
    start = QPState(tf.zeros_like(lower), tf.zeros_like(lower, tf.bool))
    state = active_set_qp(p.correlation, linear, start, fixed=~p.active)
    return lower + tf.where(p.active[None], tf.maximum(state.point, 0.0) / p.norms, 0.0)


def power_equation_weights(gram: tf.Tensor, alpha: float, regularization: float = 0.0,
                           iterations: int = 100) -> tf.Tensor:
    """The `w > 0` with `(G w)_i = w_i^{-1/α}` for every task i with a non-zero gradient.

    Equilibrated: with `G = s·NĜN` (`N_i = ‖g_i‖/max_j ‖g_j‖`) and `w = s^{-α/(1+α)} N⁻¹β`, the
    equation reads `(Ĝβ)_i = c_i β_i^{-1/α}`, `c_i = N_i^{1/α − 1}` (`c = 1` at α = 1: Nash-MTL's
    weights only depend on the correlation matrix, up to `1/‖g_i‖`). It is the stationary point of the
    strictly convex `F(β) = ½ βᵀĜβ − Σ_i c_i φ(β_i)`, `φ'(β) = β^{-1/α}` (`φ = log` at α = 1),
    found by Newton's method with a backtracking line search that keeps `β > 0` (a step is taken
    if it decreases `F` or the residual below), from the
    diagonal solution `β_i = c_i^{α/(1+α)}`, until the relative residual
    `max_i |(Ĝβ)_i β_i^{1/α} / c_i − 1|` is below 1e-12 (quadratic convergence: a handful of
    steps, at most `iterations`). The Newton system `Ĝ + diag(barrier curvature)` is positive
    definite without a ridge; `regularization · I` on `Ĝ` (default 0) would keep the potential
    bounded when gradients are linearly dependent — without it the weights may grow along a null
    direction of `Ĝ`, which leaves the update unchanged. Zero-gradient tasks get weight 0.
    """
    p = equilibrate(gram)
    dtype = gram.dtype
    num_tasks = int(gram.shape[0])
    g = p.correlation + (regularization - RIDGE) * tf.eye(num_tasks, dtype=dtype)
    power = -1.0 / alpha
    scale = tf.where(p.scale > 0, p.scale, tf.ones_like(p.scale))
    mask = tf.cast(p.active, dtype)
    # c_i = N_i^{1/α − 1} with N_i ≤ 1 the relative norms, in logs and clipped: at α → 0 it would
    # underflow for tasks much shorter than the longest.
    coefficient = tf.where(p.active, tf.exp(tf.maximum((1.0 / alpha - 1.0) * tf.math.log(p.norms),
                                                       -500.0)), tf.ones_like(p.norms))

    def barrier(beta):
        if alpha == 1.0:
            return tf.reduce_sum(mask * coefficient * tf.math.log(beta), axis=-1)
        exponent = 1.0 + power
        return tf.reduce_sum(mask * coefficient * tf.pow(beta, exponent), axis=-1) / exponent

    def potential(beta):
        return 0.5 * tf.einsum("...k,kl,...l->...", beta, g, beta) - barrier(beta)

    def residual(beta):
        balance = tf.linalg.matvec(g, beta) * tf.pow(beta, -power) / coefficient - 1.0
        return tf.reduce_max(tf.abs(balance * mask), axis=-1)

    steps = tf.constant([0.5 ** j for j in range(50)], dtype)

    def newton(beta):
        gradient = tf.linalg.matvec(g, beta) - mask * coefficient * tf.pow(beta, power)
        curvature = -power * mask * coefficient * tf.pow(beta, power - 1.0) + (1.0 - mask)
        hessian = g * mask[:, None] * mask[None, :] + tf.linalg.diag(curvature)
        direction = -tf.linalg.solve(hessian, (gradient * mask)[:, None])[:, 0]
        candidates = beta[None] + steps[:, None] * direction[None]
        positive = tf.reduce_all(candidates > 0.0, axis=1)
        safe = tf.where(positive[:, None], candidates, tf.ones_like(candidates))
        decrease = potential(safe) <= potential(beta) + 1e-4 * steps * tf.reduce_sum(
            gradient * direction)
        # Near the solution the potential's terms differ by orders of magnitude when the tasks'
        # scales do (α ≠ 1), and its float64 value stops resolving the decrease: a step that
        # shrinks the relative residual is accepted as well.
        closer = residual(safe) < residual(beta)
        accept = positive & (decrease | closer)
        first = tf.argmax(tf.cast(accept, tf.int32))
        return (tf.where(tf.reduce_any(accept), tf.gather(candidates, first), beta),)

    diagonal = tf.where(p.active, tf.linalg.diag_part(g), tf.ones_like(coefficient))
    start = tf.pow(coefficient / diagonal, alpha / (1.0 + alpha))
    beta = tf.while_loop(lambda beta: residual(beta) > KKT_TOLERANCE, newton, (start,),
                         maximum_iterations=iterations)[0]
    weights = tf.where(p.active, tf.pow(scale, -alpha / (1.0 + alpha)) * beta / p.norms,
                       tf.zeros_like(beta))
    return tf.where(tf.reduce_any(p.active), weights, tf.ones_like(weights))


def unit_gradient_pseudo_solve(gram: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """`c` with `Jᵀc = Û⁺ t`: the least-squares solution of `Û x = t` (`Û` the unit task gradients).

    `Û⁺ = Ûᵀ(ÛÛᵀ)⁺` and `ÛÛᵀ = Ĝ`, the correlation matrix, so `c = N⁻¹ Ĝ⁺ t` — computed on the
    equilibrated Gramian, so the answer does not depend on the tasks' scales. The pseudo-inverse
    drops eigenvalues below `PINV_RCOND · λ_max`: when there are more tasks than independent
    directions, `Ĝ` is singular and a float32 Gramian's rounding (≈ 1e-7 relative) must not be
    taken for a direction — with a cut-off at float64 rounding the solution was dominated by that
    noise and came out ≈ 0. Zero-gradient tasks have a zero unit vector (the official code's
    `nan_to_num`).
    """
    parts = equilibrate(gram)
    mask = tf.cast(parts.active, gram.dtype)
    correlation = parts.correlation * mask[:, None] * mask[None, :]
    solution = tf.linalg.matvec(pseudo_inverse(correlation, PINV_RCOND), target * mask)
    lengths = tf.sqrt(tf.where(parts.scale > 0, parts.scale, 1.0)) * parts.norms
    return tf.where(parts.active, solution / lengths, tf.zeros_like(solution))
