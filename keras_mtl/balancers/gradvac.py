"""GradVac (Wang et al., ICLR 2021)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import GramianWeighting, visiting_orders
from keras_mtl.balancers.registry import register


@register("gradvac")
class GradVac(GramianWeighting):
    """Gradient vaccine: raise each pair's cosine similarity to its running target.

    Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task Optimization in
    Massively Multilingual Models", ICLR 2021, Algorithm 1: for each task i, visiting the others j
    in random order, with `φ_ij = cos(g_i', g_j)` and target `φ̂_ij`: if `φ_ij < φ̂_ij`,

        g_i' ← g_i' + ‖g_i'‖ (φ̂_ij √(1 − φ_ij²) − φ_ij √(1 − φ̂_ij²)) / (‖g_j‖ √(1 − φ̂_ij²)) · g_j

    which sets the cosine to exactly `φ̂_ij`; then `φ̂_ij ← (1 − β) φ̂_ij + β φ_ij` (targets start at
    0, kept in a K×K state variable). The update is `Σ_i g_i'`. Like `pcgrad` it runs on
    coefficient vectors and the Gramian, every task's adjustment advancing at once (K steps, any
    K), the order drawn from a stateless seed `(seed, step)`.
    Our choices: one target per task pair over all balanced parameters (LibMTL's
    `group_type=0`); the target moves every step (the paper's Algorithm 1), where LibMTL moves it
    only for adjusted pairs; β = 0.5 as LibMTL's default.
    """

    def __init__(self, beta: float = 0.5, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.beta = self.check_range("beta", beta, 0.0, 1.0)
        self.seed = int(seed)

    def build_state(self, num_tasks):
        self.targets = self.add_weight(shape=(num_tasks, num_tasks), initializer="zeros",
                                       trainable=False, name="targets")

    def weights_from_gramian(self, gram, context):
        num_tasks = self.num_tasks
        orders = visiting_orders(self.seed, context.step, num_tasks)
        tasks = tf.range(num_tasks)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))

        # Every task's adjusted gradient (and its row of targets) advances one visit per
        # iteration: K steps on K×K tensors rather than K² unrolled ones (compile time).
        def visit(position, coefficients, targets):
            j = orders[:, position]
            other = tf.one_hot(j, num_tasks, dtype=gram.dtype)  # [i, k]
            norm_i = tf.sqrt(tf.maximum(tf.einsum("ik,kl,il->i", coefficients, gram,
                                                  coefficients), 0.0))
            norm_j = tf.gather(norms, j)
            dots = tf.einsum("ik,ki->i", coefficients, tf.gather(gram, j, axis=1))
            cosine = tf.math.divide_no_nan(dots, norm_i * norm_j)
            target = tf.reduce_sum(targets * other, axis=1)
            sine_target = tf.sqrt(tf.maximum(1.0 - target ** 2, 0.0))
            step_size = tf.math.divide_no_nan(
                norm_i * (target * tf.sqrt(tf.maximum(1.0 - cosine ** 2, 0.0))
                          - cosine * sine_target),
                norm_j * sine_target)
            visits_other = tf.not_equal(j, tasks)
            adjust = (cosine < target) & visits_other
            coefficients = coefficients + tf.where(adjust, step_size, 0.0)[:, None] * other
            moved = (1.0 - self.beta) * target + self.beta * cosine
            targets = tf.where((other > 0) & visits_other[:, None], moved[:, None], targets)
            return position + 1, coefficients, targets

        _, coefficients, targets = tf.while_loop(
            lambda position, c, t: position < num_tasks, visit,
            (tf.constant(0), tf.eye(num_tasks, dtype=gram.dtype),
             tf.cast(self.targets, gram.dtype)))
        updated = tf.cast(targets, self.targets.dtype)
        return tf.reduce_sum(coefficients, axis=0), ((self.targets, updated),)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}
