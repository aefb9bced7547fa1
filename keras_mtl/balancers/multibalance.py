"""MultiBalance (He et al., Meta, arXiv 2411.11871)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import BalanceResult, Weighting
from keras_mtl.balancers.linalg import row_norms, split_segments, weighted_sum
from keras_mtl.balancers.registry import register
from keras_mtl.gradients.blocks import block_row_norms, block_weighted_sum

REFERENCES = ("max", "mean")
NORMS = ("batch", "example")


@register("multibalance")
class MultiBalance(Weighting):
    """Magnitude balancing of task gradients w.r.t. the shared *representation*.

    He et al., "MultiBalance: Multi-Objective Gradient Balancing in Industrial-Scale Multi-Task
    Recommendation System", arXiv 2411.11871. MetaBalance's magnitude rule moved from parameter
    tensors to the shared feature representation Z, without a target/auxiliary split:

        G_k = ∂L_k/∂Z                                   (heads only: cheap)
        m_k ← β·m_k + (1 − β)·‖G_k‖
        Ĝ_k = r·(m_ref / m_k)·G_k + (1 − r)·G_k
        ∂/∂θ_shared = (∂Z/∂θ_shared)ᵀ Σ_k Ĝ_k               (one backward pass through the trunk)

    Because `Σ_k Ĝ_k = Σ_k c_k G_k` with `c_k = r·m_ref/m_k + 1 − r`, the update is the exact
    gradient of `Σ_k c_k L_k` w.r.t. the trunk (a test checks this against autodiff). Heads get their
    own task's gradient (weights 1), as in MetaBalance.

    What the public text leaves open, and our defaults:
    - `reference`: `"max"` (default; every task is pulled up to the largest magnitude, as in
      GradCraft), `"mean"`, or a task (index or name) whose magnitude is the reference.
    - `norm`: `"batch"` (default): `‖G_k‖` over the whole batch's representation gradient;
      `"example"`: the mean over rows of each row's gradient norm, rows with a zero gradient
      (outside the task's sample space) left out.
    - `relax_factor` r = 0.7 and β = 0.9 follow MetaBalance's published defaults.
    - No bias correction: `m_ref / m_k` does not need it (all averages start at 0 together).
      `m_ref / m_k` is 0 where `m_k` is 0 (a task with no rows contributes nothing anyway).
    """

    supported_levels = ("representation", "parameters")
    default_level = "representation"
    # The weights come from the gradients' norms: `norm="example"` has no block path.
    needs_matrix = True

    def __init__(self, relax_factor: float = 0.7, beta: float = 0.9,
                 reference: str | int = "max", norm: str = "batch", **kwargs):
        super().__init__(**kwargs)
        self.relax_factor = self.check_range("relax_factor", relax_factor, 0.0, 1.0)
        self.beta = self.check_range("beta", beta, 0.0, 1.0, high_open=True)
        self.check_choice("norm", norm, NORMS)
        self.reference = reference
        self.norm = norm

    def build_state(self, num_tasks):
        self.reference_index = (None if self.reference in REFERENCES
                                else self.task_index(self.reference))
        self.magnitudes = self.add_weight(shape=(num_tasks,), initializer="zeros",
                                          trainable=False, name="magnitudes")

    def gradient_norms(self, matrix, context) -> tf.Tensor:
        if self.norm == "batch":
            return row_norms(matrix)
        if context.layout.batch_size is None:
            raise ValueError("multibalance norm='example' needs the batch layout of the "
                             "representation (run it inside MultiTaskModel).")
        squares = 0.0
        for block in split_segments(matrix, context.layout.segment_sizes):
            rows = tf.reshape(block, [self.num_tasks, context.layout.batch_size, -1])
            squares += tf.reduce_sum(tf.square(rows), axis=2)  # [K, B]
        example_norms = tf.sqrt(squares)
        nonzero = tf.reduce_sum(tf.cast(example_norms > 0, tf.float32), axis=1)
        return tf.math.divide_no_nan(tf.reduce_sum(example_norms, axis=1), nonzero)

    def shared_weights(self, magnitudes) -> tf.Tensor:
        if self.reference == "max":
            reference = tf.reduce_max(magnitudes)
        elif self.reference == "mean":
            reference = tf.reduce_mean(magnitudes)
        else:
            reference = magnitudes[self.reference_index]
        return (self.relax_factor * tf.math.divide_no_nan(reference, magnitudes)
                + (1.0 - self.relax_factor))

    def balance(self, matrix, losses, context):
        return self._result(self.gradient_norms(matrix, context),
                            lambda weights: weighted_sum(matrix, weights))

    def balance_blocks(self, blocks, losses, context):
        if self.norm != "batch":
            return super().balance_blocks(blocks, losses, context)
        return self._result(block_row_norms(blocks),
                            lambda weights: block_weighted_sum(blocks, weights))

    def _result(self, norms, combine):
        magnitudes = self.beta * self.magnitudes + (1.0 - self.beta) * norms
        weights = self.shared_weights(magnitudes)
        ones = tf.ones([self.num_tasks], tf.float32)
        return BalanceResult(combine(weights), ones, ((self.magnitudes, magnitudes),),
                             shared_weights=weights)

    def get_config(self):
        return {**super().get_config(), "relax_factor": self.relax_factor, "beta": self.beta,
                "reference": self.reference, "norm": self.norm}
