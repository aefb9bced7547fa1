"""GradVac (Wang et al., ICLR 2021)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.gramian import GramianWeighting
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
    coefficient vectors and the Gramian, the order drawn from a stateless seed `(seed, step)`.
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
        step = tf.cast(context.step, tf.int32)
        targets = tf.cast(self.targets, gram.dtype)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        new_targets = tf.unstack(targets)
        coefficients = []
        for i in range(num_tasks):
            noise = tf.random.stateless_uniform([num_tasks], seed=tf.stack([self.seed + i, step]))
            order = tf.argsort(noise)
            c = tf.one_hot(i, num_tasks, dtype=gram.dtype)
            row = new_targets[i]
            for position in range(num_tasks):
                j = order[position]
                other = tf.one_hot(j, num_tasks, dtype=gram.dtype)
                norm_i = tf.sqrt(tf.maximum(tf.einsum("k,kl,l->", c, gram, c), 0.0))
                norm_j = tf.gather(norms, j)
                cosine = tf.math.divide_no_nan(tf.reduce_sum(c * tf.gather(gram, j, axis=1)),
                                               norm_i * norm_j)
                target = tf.gather(row, j)
                sine_target = tf.sqrt(tf.maximum(1.0 - target ** 2, 0.0))
                step_size = tf.math.divide_no_nan(
                    norm_i * (target * tf.sqrt(tf.maximum(1.0 - cosine ** 2, 0.0))
                              - cosine * sine_target),
                    norm_j * sine_target)
                adjust = (cosine < target) & tf.not_equal(j, i)
                c = c + tf.where(adjust, step_size, 0.0) * other
                moved = (1.0 - self.beta) * target + self.beta * cosine
                row = tf.where(tf.equal(tf.range(num_tasks), j) & tf.not_equal(j, i),
                               moved, row)
            coefficients.append(c)
            new_targets[i] = row
        updated = tf.cast(tf.stack(new_targets), self.targets.dtype)
        return tf.add_n(coefficients), ((self.targets, updated),)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}
