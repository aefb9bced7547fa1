"""The mean of the task gradients (TorchJD's `Mean`)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.registry import register


@register("mean")
class MeanWeighting(Weighting):
    """The average task gradient: `g = (1/K) Σ_k ∇L_k`, i.e. `w_k = 1/K`.

    TorchJD's `Mean` aggregator (`MeanWeighting`). It is `ew` divided by K: the same direction,
    a step K times shorter (so with a fixed learning rate it is not an alias of `ew`, which is
    TorchJD's `Sum`; `get("sum")` resolves to `ew`). Exact at every level; the heads are trained
    with the same weights 1/K.
    """

    def task_weights(self, losses, context, matrix=None):
        return tf.fill([self.num_tasks], 1.0 / self.num_tasks), ()
