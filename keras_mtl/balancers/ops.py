"""Reductions over the `[K, D]` task-gradient matrix, written the way XLA on CPU runs them fast.

D is large (a representation-level matrix is batch × cut width per task: 4.4 M columns for an
8×256 MMoE at batch 2048) and K is small, and XLA's CPU emitter handles the obvious forms badly.
Measured on the 2-core development machine, XLA, K = 4, D = 4.4 M (see `keras-mtl bench`):
- `w @ J` as `matvec(J, w, transpose_a=True)`: 9.6 ms; as the broadcast sum below: 3.6 ms.
- row norms as `tf.norm(J, axis=1)`: 43 ms; as `einsum("kd,kd->k")`: 13 ms.
- the Gramian as `matmul(J, Jᵀ)`: 52 ms, the fastest form tried (einsum, blocked or pairwise
  forms were 56-480 ms).
"""

from __future__ import annotations

import tensorflow as tf


def weighted_sum(matrix: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """`Σ_k w_k J_k`: `[D]`."""
    return tf.reduce_sum(matrix * tf.cast(weights, matrix.dtype)[:, None], axis=0)


def row_norms(matrix: tf.Tensor) -> tf.Tensor:
    """`‖J_k‖` for every row: `[K]`."""
    return tf.sqrt(tf.einsum("kd,kd->k", matrix, matrix))


def gramian(matrix: tf.Tensor) -> tf.Tensor:
    """`J Jᵀ`: `[K, K]`."""
    return tf.matmul(matrix, matrix, transpose_b=True)
