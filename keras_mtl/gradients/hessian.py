"""CoGrad's exact curvature term: Hessian-vector products of the task losses (nested tapes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf


def transference_hessian_term(loss_fn: Callable[[], tf.Tensor], variables: Sequence) -> tf.Tensor:
    """Exact `Σ_i H_i (S − g_i)`, `S = Σ_j g_j`, flattened over `variables`, in one HVP.

    `loss_fn()` returns the `[K]` task losses. Uses nested tapes:
    `∇_θ Σ_i ⟨g_i(θ), stop(S − g_i)⟩ = Σ_i H_i (S − g_i)`.
    """
    with tf.GradientTape() as outer:
        with tf.GradientTape(persistent=True) as inner:
            task_losses = tf.unstack(loss_fn())  # sliced on the tape, or they are unconnected
        grads = [
            tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(
                loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)], 0)
            for loss in task_losses
        ]
        total = tf.stop_gradient(tf.add_n(grads))
        pairing = tf.add_n([tf.reduce_sum(g * (total - tf.stop_gradient(g))) for g in grads])
    del inner
    hvp = outer.gradient(pairing, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return tf.concat([tf.reshape(h, [-1]) for h in hvp], 0)
