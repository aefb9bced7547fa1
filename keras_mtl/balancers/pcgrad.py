"""PCGrad (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import GramianWeighting, visiting_orders
from keras_mtl.balancers.registry import register


@register("pcgrad")
class PCGrad(GramianWeighting):
    """Projecting conflicting gradients ("gradient surgery").

    Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, Algorithm 1: for every task
    i, visiting the other tasks j in a random order, if `⟨g_i', g_j⟩ < 0` then
    `g_i' ← g_i' − (⟨g_i', g_j⟩ / ‖g_j‖²) g_j`; the update is `Σ_i g_i'`.

    Every projected `g_i'` is a combination of the task gradients, so the whole algorithm runs on
    coefficient vectors and the Gramian (`⟨c J, g_j⟩ = c G[:, j]`): K steps on K×K coefficient
    matrices (every task's projection advances at once), whatever the width of J. The order is
    drawn per step from a stateless seed `(seed, step)`, so runs are reproducible. With two
    tasks the order does not matter and no negative inner product remains.
    """

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)

    def weights_from_gramian(self, gram, context):
        num_tasks = self.num_tasks
        orders = visiting_orders(self.seed, context.step, num_tasks)
        tasks = tf.range(num_tasks)

        # All K projected gradients advance together, one visit each per iteration: a loop of K
        # steps on K×K tensors, so the graph (and XLA's compile time) does not grow with K².
        def visit(position, coefficients):
            j = orders[:, position]  # the task each projected gradient visits now
            columns = tf.gather(gram, j, axis=1)  # [k, i] = G[k, j_i]
            dots = tf.einsum("ik,ki->i", coefficients, columns)
            norms_sq = tf.gather(tf.linalg.diag_part(gram), j)
            project = (dots < 0.0) & (norms_sq > 0.0) & tf.not_equal(j, tasks)
            factor = tf.where(project, dots / tf.where(norms_sq > 0, norms_sq, 1.0), 0.0)
            return position + 1, coefficients - factor[:, None] * tf.one_hot(j, num_tasks,
                                                                              dtype=gram.dtype)

        _, coefficients = tf.while_loop(lambda position, c: position < num_tasks, visit,
                                        (tf.constant(0), tf.eye(num_tasks, dtype=gram.dtype)))
        return tf.reduce_sum(coefficients, axis=0), ()

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}

