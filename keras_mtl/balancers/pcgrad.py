"""PCGrad (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import GramianWeighting
from keras_mtl.balancers.registry import register


@register("pcgrad")
class PCGrad(GramianWeighting):
    """Projecting conflicting gradients ("gradient surgery").

    Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, Algorithm 1: for every task
    i, visiting the other tasks j in a random order, if `⟨g_i', g_j⟩ < 0` then
    `g_i' ← g_i' − (⟨g_i', g_j⟩ / ‖g_j‖²) g_j`; the update is `Σ_i g_i'`.

    Every projected `g_i'` is a combination of the task gradients, so the whole algorithm runs on
    coefficient vectors and the Gramian (`⟨c J, g_j⟩ = c G[:, j]`): K² steps on K-vectors,
    whatever the width of J. The order is drawn per step from a stateless seed `(seed, step)`, so
    runs are reproducible. With two tasks the order does not matter and no negative inner product
    remains.
    """

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)

    def weights_from_gramian(self, gram, context):
        num_tasks = self.num_tasks
        step = tf.cast(context.step, tf.int32)
        coefficients = []
        for i in range(num_tasks):
            noise = tf.random.stateless_uniform([num_tasks], seed=tf.stack([self.seed + i, step]))
            order = tf.argsort(noise)
            c = tf.one_hot(i, num_tasks, dtype=gram.dtype)
            for position in range(num_tasks):
                j = order[position]
                column = tf.gather(gram, j, axis=1)
                dot = tf.reduce_sum(c * column)
                norm_sq = tf.gather(column, j)
                project = (dot < 0.0) & (norm_sq > 0.0) & tf.not_equal(j, i)
                c = c - tf.where(project, dot / tf.where(norm_sq > 0, norm_sq, 1.0), 0.0) * \
                    tf.one_hot(j, num_tasks, dtype=gram.dtype)
            coefficients.append(c)
        return tf.add_n(coefficients), ()

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
