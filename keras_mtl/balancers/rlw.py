"""Random loss weighting (Lin et al., TMLR 2022)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.registry import register


@register("rlw")
class RandomLossWeighting(Weighting):
    """Fresh random weights every step.

    Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
    Learning", TMLR 2022: `w = softmax(z)`, `z ~ N(0, I)` drawn anew each step (their default
    normal distribution; the weights sum to 1, as in LibMTL and TorchJD's `Random`). Draws come
    from a stateless seed `(seed, step)`, so a run is reproducible and a resumed run continues
    the same sequence.
    """

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)

    def task_weights(self, losses, context, matrix=None):
        z = tf.random.stateless_normal([self.num_tasks],
                                       seed=tf.stack([self.seed, tf.cast(context.step, tf.int32)]))
        return tf.nn.softmax(z), ()

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
