"""Equal weighting and fixed weights."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.registry import register


@register("ew")
class EqualWeighting(Weighting):
    """Equal weighting: `g = Σ_k ∇L_k`, i.e. `w_k = 1` (plain summed-loss training).

    The baseline every benchmark is measured against. Exact at every level.
    """

    def task_weights(self, losses, context, matrix=None):
        return tf.ones([self.num_tasks], tf.float32), ()


@register("static")
class StaticWeighting(Weighting):
    """Fixed task weights: `g = Σ_k w_k ∇L_k` with the given `weights` (e.g. from a grid search).

    These multiply on top of each `Task.weight`. Exact at every level.
    """

    def __init__(self, weights: Sequence[float] = (), **kwargs):
        super().__init__(**kwargs)
        # Finite and >= 0: a NaN weight would make every step's loss NaN (all steps skipped).
        self.weights_ = self.check_finite_list("weights", weights, low=0.0)

    def build_state(self, num_tasks):
        if len(self.weights_) != num_tasks:
            raise ValueError(
                f"static balancer has {len(self.weights_)} weights {self.weights_} but the model "
                f"has {num_tasks} tasks."
            )

    def task_weights(self, losses, context, matrix=None):
        return tf.constant(self.weights_, tf.float32), ()

    def get_config(self):
        return {**super().get_config(), "weights": self.weights_}
