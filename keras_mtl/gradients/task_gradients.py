"""`TaskGradients`: one batch's per-task information, as the gradients package hands it on."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from keras_mtl.gradients.blocks import dense_blocks
from keras_mtl.gradients.layout import GradientLayout

LEVELS = ("losses", "representation", "parameters")


class TaskGradients(NamedTuple):
    """What a balancer reduces at one step, at its level.

    - `level`: `"losses"` (losses only), `"representation"` (task gradients at the backbone's cut)
      or `"parameters"` (task gradients w.r.t. the balanced shared parameters).
    - `losses`: `[K]` task losses of the global batch, `Task.weight` applied.
    - `blocks`: representation level, `blocks[k][s]` = task k's gradient w.r.t. cut tensor s, as a
      dense tensor, `None` (an exact zero) or an `OuterProductBlock` (see `blocks`).
    - `matrix`: parameter level, the `[K, D]` matrix (row k = task k's flattened gradient).
    - `layout`: how `J`'s columns split into tensors (`GradientLayout`).
    - `hessian_term`: only when asked for (CoGrad's exact mode), `Σ_i H_i (Σ_j g_j − g_i)` over the
      balanced parameters, flattened like `matrix`.
    Task gradients are float32 and unscaled (a loss scale is divided out), whatever the policy.
    """

    level: str
    losses: tf.Tensor
    blocks: list | None = None
    matrix: tf.Tensor | None = None
    layout: GradientLayout = GradientLayout()
    hessian_term: tf.Tensor | None = None

    def as_matrix(self) -> tf.Tensor:
        """The `[K, D]` matrix `J` (representation-level blocks materialised, in cut order)."""
        if self.matrix is not None:
            return self.matrix
        if self.blocks is None:
            raise ValueError("Losses-level TaskGradients hold no task gradients.")
        dense = dense_blocks(self.blocks, self.layout.cut_tensors)
        return tf.stack([tf.concat([tf.reshape(b, [-1]) for b in row], 0) for row in dense])
