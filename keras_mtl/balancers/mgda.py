"""MGDA (Désidéri 2012; Sener & Koltun, NeurIPS 2018)."""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

from keras_mtl.balancers.gramian import GramianWeighting, pseudo_inverse
from keras_mtl.balancers.registry import register

MAX_TASKS = 12


def min_norm_weights(gram: tf.Tensor, tolerance: float = 1e-9) -> tf.Tensor:
    """`argmin_{w ∈ simplex} wᵀ G w`, exactly, by enumerating active sets (K ≤ 12).

    For every non-empty support S the equality-constrained problem has the KKT system
    `[[G_SS, 1], [1ᵀ, 0]] [w_S; −λ] = [0; 1]`, solved with a pseudo-inverse so singular Gramians
    (linearly dependent gradients) are fine. Among the supports whose solution is feasible
    (w ≥ 0) the one with the smallest `wᵀ G w` is the optimum, because the optimum's own support is
    among them. No iterations, hence no iteration count to tune: the result meets the KKT conditions
    to rounding (a test checks it). 2^K − 1 small solves: 4,095 of 13×13 at K = 12.
    """
    num_tasks = int(gram.shape[0])
    if num_tasks > MAX_TASKS:
        raise ValueError(f"The exact min-norm solver enumerates 2^K supports; K = {num_tasks} > "
                         f"{MAX_TASKS}. Use fewer tasks or an iterative solver.")
    supports = np.array([[1.0 if i in s else 0.0 for i in range(num_tasks)]
                         for r in range(1, num_tasks + 1)
                         for s in itertools.combinations(range(num_tasks), r)])
    masks = tf.constant(supports, gram.dtype)  # [S, K]
    restricted = (masks[:, :, None] * masks[:, None, :] * gram[None]
                  + tf.linalg.diag(1.0 - masks))  # identity outside the support
    bordered = tf.concat([
        tf.concat([restricted, masks[:, :, None]], axis=2),
        tf.concat([masks[:, None, :], tf.zeros_like(masks[:, :1, None])], axis=2),
    ], axis=1)  # [S, K+1, K+1]
    rhs = tf.concat([tf.zeros_like(masks), tf.ones_like(masks[:, :1])], axis=1)
    solution = tf.linalg.matvec(pseudo_inverse(bordered), rhs)[:, :num_tasks] * masks
    objective = tf.einsum("sk,kl,sl->s", solution, gram, solution)
    scale = tf.reduce_max(tf.abs(gram)) + 1e-300
    feasible = (tf.reduce_min(solution, axis=1) >= -tolerance) & (
        tf.abs(tf.reduce_sum(solution, axis=1) - 1.0) <= 1e-6)
    objective = tf.where(feasible, objective / scale, tf.constant(np.inf, gram.dtype))
    best = tf.argmin(objective)
    weights = tf.maximum(tf.gather(solution, best), 0.0)
    return weights / tf.reduce_sum(weights)


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
    representation, an upper bound of the parameter-level problem). Solved exactly in-graph (see
    `min_norm_weights`); K ≤ 12.
    """

    def build_state(self, num_tasks):
        if num_tasks > MAX_TASKS:
            raise ValueError(f"mgda supports up to {MAX_TASKS} tasks, got {num_tasks}.")

    def weights_from_gramian(self, gram, context):
        return min_norm_weights(gram), ()
