"""The small convex problems behind Gramian weightings, solved in TensorFlow (XLA-safe).

All work on K×K matrices (K = number of tasks) in float64, never on the gradients themselves:
- `simplex_qp`: `min ½ wᵀQw + bᵀw` over the simplex — exact, by enumerating supports (MGDA,
  CAGrad's inner problem);
- `dual_cone_weights`: `min vᵀGv` subject to `v ≥ u` — exact, by enumerating active sets
  (UPGrad, DualProj: the projection of `uᵀJ` onto the dual cone of the task gradients);
- `power_equation_weights`: the positive solution of `(Gw)_i = w_i^{-1/α}` — damped Newton on a
  strictly convex potential (Nash-MTL at α = 1, FairGrad).

Enumeration costs 2^K small solves, hence `MAX_TASKS`; it has no iteration count to tune and its
answer meets the optimality conditions to rounding, which the tests check.
"""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

from keras_mtl.balancers.gramian import pseudo_inverse

MAX_TASKS = 12


def check_num_tasks(name: str, num_tasks: int) -> None:
    if num_tasks > MAX_TASKS:
        raise ValueError(f"{name}'s exact solver enumerates 2^K active sets; K = {num_tasks} > "
                         f"{MAX_TASKS}. Use fewer tasks or a closed-form balancer.")


def _supports(num_tasks: int, include_empty: bool) -> np.ndarray:
    start = 0 if include_empty else 1
    return np.array([[1.0 if i in s else 0.0 for i in range(num_tasks)]
                     for r in range(start, num_tasks + 1)
                     for s in itertools.combinations(range(num_tasks), r)])


def normalize_gramian(gram: tf.Tensor, epsilon: float = 1e-4) -> tf.Tensor:
    """`G / trace(G)` (the Gramian of `J / ‖J‖_F`), or zeros when the trace is below `epsilon`.

    The weights of the scale-free methods do not change; their solvers see numbers of order 1.
    """
    trace = tf.linalg.trace(gram)
    return tf.where(trace < epsilon, tf.zeros_like(gram), gram / tf.where(trace > 0, trace, 1.0))


class SimplexQP:
    """`argmin_{w ≥ 0, Σw = 1} ½ wᵀQw + bᵀw` for a fixed PSD `Q` and any number of `b`.

    For every support S the equality-constrained problem has the KKT system
    `[[Q_SS, 1], [1ᵀ, 0]] [w_S; μ] = [−b_S; 1]`, solved with a pseudo-inverse (singular `Q` are
    fine). Among the solutions that are feasible (w ≥ 0) the one with the smallest objective is the
    optimum, because the optimum's own support is among them. The 2^K − 1 bordered systems depend
    on `Q` only, so they are inverted once and reused for every `b` (CAGrad's bisection).
    """

    def __init__(self, quadratic: tf.Tensor, tolerance: float = 1e-9):
        self.quadratic = quadratic
        self.num_tasks = int(quadratic.shape[0])
        check_num_tasks("The simplex QP", self.num_tasks)
        self.masks = tf.constant(_supports(self.num_tasks, include_empty=False), quadratic.dtype)
        m = self.masks
        restricted = m[:, :, None] * m[:, None, :] * quadratic[None] + tf.linalg.diag(1.0 - m)
        bordered = tf.concat([
            tf.concat([restricted, m[:, :, None]], axis=2),
            tf.concat([m[:, None, :], tf.zeros_like(m[:, :1, None])], axis=2),
        ], axis=1)  # [S, K+1, K+1]
        self.inverse = pseudo_inverse(bordered)
        self.tolerance = tolerance

    def solve(self, linear: tf.Tensor | None = None) -> tf.Tensor:
        m, q = self.masks, self.quadratic
        if linear is None:
            linear = tf.zeros([self.num_tasks], q.dtype)
        rhs = tf.concat([-m * linear[None], tf.ones_like(m[:, :1])], axis=1)
        solution = tf.linalg.matvec(self.inverse, rhs)[:, :self.num_tasks] * m
        objective = (0.5 * tf.einsum("sk,kl,sl->s", solution, q, solution)
                     + tf.linalg.matvec(solution, linear))
        feasible = (tf.reduce_min(solution, axis=1) >= -self.tolerance) & (
            tf.abs(tf.reduce_sum(solution, axis=1) - 1.0) <= 1e-6)
        scale = tf.reduce_max(tf.abs(q)) + tf.reduce_max(tf.abs(linear)) + 1e-300
        objective = tf.where(feasible, objective / scale, tf.constant(np.inf, q.dtype))
        weights = tf.maximum(tf.gather(solution, tf.argmin(objective)), 0.0)
        return weights / tf.reduce_sum(weights)


def min_norm_weights(gram: tf.Tensor) -> tf.Tensor:
    """`argmin_{w ∈ simplex} wᵀGw`: the min-norm point of the convex hull of the task gradients."""
    return SimplexQP(gram).solve()


def dual_cone_weights(gram: tf.Tensor, lower: tf.Tensor, tolerance: float = 1e-9) -> tf.Tensor:
    """`argmin_v vᵀGv` subject to `v ≥ u`, for each row `u` of `lower` (`[B, K]`), G positive definite.

    By Proposition 1 of Quinton & Rey (arXiv 2406.16232), `vᵀJ` is then the projection of `uᵀJ`
    onto the dual cone `{x : Jx ≥ 0}`. For every free set F (the rest held at `v_i = u_i`)
    stationarity on F gives `G_FF v_F = −G_FA u_A`: one linear system per set, the same matrix for
    every `u`. The strictly convex problem's unique optimum is the feasible candidate (`v ≥ u`) of
    smallest objective.
    """
    num_tasks = int(gram.shape[0])
    check_num_tasks("The dual-cone projection", num_tasks)
    free = tf.constant(_supports(num_tasks, include_empty=True), gram.dtype)  # [S, K]
    fixed = 1.0 - free
    systems = free[:, :, None] * free[:, None, :] * gram[None] + tf.linalg.diag(fixed)
    held = fixed[:, None, :] * lower[None]  # [S, B, K]: u on the active set, 0 elsewhere
    rhs = held - free[:, None, :] * tf.einsum("kl,sbl->sbk", gram, held)
    v = tf.linalg.matvec(tf.linalg.inv(systems)[:, None], rhs)  # [S, B, K]
    v = fixed[:, None, :] * lower[None] + free[:, None, :] * v
    objective = tf.einsum("sbk,kl,sbl->sb", v, gram, v)
    slack = tf.reduce_min(v - lower[None], axis=2)
    scale = 1.0 + tf.reduce_max(tf.abs(v), axis=2)
    objective = tf.where(slack >= -tolerance * scale, objective,
                         tf.constant(np.inf, gram.dtype))
    best = tf.argmin(objective, axis=0)  # [B]
    return tf.gather(tf.transpose(v, [1, 0, 2]), best, batch_dims=1)


def power_equation_weights(gram: tf.Tensor, alpha: float, regularization: float = 1e-6,
                           iterations: int = 40) -> tf.Tensor:
    """The `w > 0` with `(G w)_i = w_i^{-1/α}` for every task i.

    It is the stationary point of the strictly convex `F(w) = ½ wᵀGw − Σ_i φ(w_i)`,
    `φ' (w) = w^{-1/α}` (`φ = log` at α = 1), found by Newton's method with a backtracking line
    search that keeps `w > 0`. The problem is solved on `G / s` (`s` = mean squared task-gradient
    norm) and scaled back exactly (`w = s^{-α/(1+α)} w'`); `regularization · I` is added to the
    normalised Gramian so a solution exists when gradients are linearly dependent or zero (a task
    with a zero gradient then gets a large but finite weight, which changes nothing in `wᵀJ`).
    Starting from the diagonal solution `w_i = G_ii^{-α/(1+α)}`, Newton's quadratic convergence
    reaches a relative residual below 1e-8 within `iterations`, on Gramians with a condition
    number of 1e12 too (a test checks it for α from 0.5 to 5).
    """
    num_tasks = int(gram.shape[0])
    scale = tf.linalg.trace(gram) / num_tasks
    degenerate = scale <= 0.0
    scale = tf.where(degenerate, tf.ones_like(scale), scale)
    g = gram / scale + regularization * tf.eye(num_tasks, dtype=gram.dtype)
    power = -1.0 / alpha

    def potential(w):
        if alpha == 1.0:
            barrier = tf.reduce_sum(tf.math.log(w), axis=-1)
        else:
            exponent = 1.0 + power
            barrier = tf.reduce_sum(tf.pow(w, exponent), axis=-1) / exponent
        return 0.5 * tf.einsum("...k,kl,...l->...", w, g, w) - barrier

    steps = tf.constant([0.5 ** j for j in range(40)], gram.dtype)

    def newton(i, w):
        gradient = tf.linalg.matvec(g, w) - tf.pow(w, power)
        hessian = g + tf.linalg.diag(-power * tf.pow(w, power - 1.0))
        direction = -tf.linalg.solve(hessian, gradient[:, None])[:, 0]
        candidates = w[None] + steps[:, None] * direction[None]
        positive = tf.reduce_all(candidates > 0.0, axis=1)
        safe = tf.where(positive[:, None], candidates, tf.ones_like(candidates))
        decrease = potential(safe) <= potential(w) + 1e-4 * steps * tf.reduce_sum(
            gradient * direction)
        accept = positive & decrease
        first = tf.argmax(tf.cast(accept, tf.int32))
        return i + 1, tf.where(tf.reduce_any(accept), tf.gather(candidates, first), w)

    start = tf.pow(tf.linalg.diag_part(g), -alpha / (1.0 + alpha))
    _, w = tf.while_loop(lambda i, w: True, newton, (tf.constant(0), start),
                         maximum_iterations=iterations)
    w = w * tf.pow(scale, -alpha / (1.0 + alpha))
    return tf.where(degenerate, tf.ones_like(w), w)
