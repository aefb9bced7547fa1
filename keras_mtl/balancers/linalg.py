"""The linear algebra of the balancers: reductions over the `[K, D]` task-gradient matrix and its
per-tensor column blocks, and the K×K matrix functions the Gramian methods share.

**Reductions over `J`**, written the way XLA on CPU runs them fast. D is large (a
representation-level matrix is batch × cut width per task: 4.4 M columns for an 8×256 MMoE at
batch 2048) and K is small, and XLA's CPU emitter handles the obvious forms badly. Measured on the
2-core development machine, XLA, K = 4, D = 4.4 M (see `keras-mtl bench`):
- `w @ J` as `matvec(J, w, transpose_a=True)`: 9.6 ms; as the broadcast sum below: 3.6 ms.
- row norms as `tf.norm(J, axis=1)`: 43 ms; as `einsum("kd,kd->k")`: 13 ms.
- the Gramian as `matmul(J, Jᵀ)`: 52 ms, the fastest form tried (einsum, blocked or pairwise
  forms were 56-480 ms).

The same reductions on structured cut-gradient blocks (never materialised as `J`) are in
`keras_mtl.gradients.blocks`.

**Segments**: the columns of `J` split into one block per tensor (`GradientLayout.segment_sizes`),
for the methods that balance per tensor.

**K×K matrices**: the pseudo-inverse and the guard against non-finite input that TensorFlow's CPU
eigen kernels need. The optimisation problems built on them are in `solvers`.
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


def split_segments(matrix: tf.Tensor, segment_sizes) -> list[tf.Tensor]:
    """The `[K, d_s]` column blocks of a `[K, D]` matrix, one per tensor (`None`: one block)."""
    if segment_sizes is None:
        return [matrix]
    return tf.split(matrix, list(segment_sizes), axis=1)


def segment_norms(matrix: tf.Tensor, segment_sizes) -> tf.Tensor:
    """`[K, S]`: the norm of each task's gradient restricted to each tensor."""
    return tf.stack([row_norms(block) for block in split_segments(matrix, segment_sizes)], axis=1)


def scale_segments(matrix: tf.Tensor, factors: tf.Tensor, segment_sizes) -> tf.Tensor:
    """Multiplies block s of task k by `factors[k, s]`."""
    blocks = split_segments(matrix, segment_sizes)
    return tf.concat([block * factors[:, s:s + 1] for s, block in enumerate(blocks)], axis=1)


def finite_or_identity(matrices: tf.Tensor) -> tf.Tensor:
    """`matrices`, or identities where one holds a NaN/inf. A non-finite gradient makes the model
    skip the step anyway, but TensorFlow's CPU eigen/LU kernels raise on such input (XLA's do
    not), which would stop training instead of skipping one step."""
    finite = tf.reduce_all(tf.math.is_finite(matrices), axis=[-2, -1], keepdims=True)
    identity = tf.eye(tf.shape(matrices)[-1], batch_shape=tf.shape(matrices)[:-2],
                      dtype=matrices.dtype)
    return tf.where(finite, matrices, identity)


def pseudo_inverse(matrices: tf.Tensor, rcond: float) -> tf.Tensor:
    """Moore-Penrose inverse of a batch of symmetric matrices (eigen-decomposition; XLA-safe).

    Eigenvalues with `|λ| ≤ rcond · max |λ|` count as zero. The cut-off is the caller's: it says
    which eigenvalues are rounding rather than directions, and that depends on where the matrix
    comes from (GradCraft's conflict blocks of the Gramian, 1e-10; a correlation matrix of a float32
    Gramian, `solvers.PINV_RCOND`). A matrix holding a NaN/inf is inverted as an identity
    (`finite_or_identity`), so the CPU eigen kernel never raises.
    """
    eigenvalues, vectors = tf.linalg.eigh(finite_or_identity(matrices))
    cutoff = rcond * tf.reduce_max(tf.abs(eigenvalues), axis=-1, keepdims=True)
    kept = tf.abs(eigenvalues) > cutoff
    # 1/λ only where kept: the discarded branch of the `where` then holds no inf.
    inverse = tf.where(kept, 1.0 / tf.where(kept, eigenvalues, tf.ones_like(eigenvalues)),
                       tf.zeros_like(eigenvalues))
    return tf.matmul(vectors * inverse[..., None, :], vectors, transpose_b=True)


def project_to_simplex(vector: tf.Tensor) -> tf.Tensor:
    """The Euclidean projection of a `[K]` vector onto the simplex `{w ≥ 0, Σw = 1}`.

    Held, Wolfe & Crowder (1974) / Duchi et al. (ICML 2008), Fig. 1: with `u` sorted in decreasing
    order, `ρ = max{j : u_j − (Σ_{i≤j} u_i − 1)/j > 0}` and `θ = (Σ_{i≤ρ} u_i − 1)/ρ`, the projection
    is `max(v − θ, 0)`. Sort-based, O(K log K), XLA-safe.
    """
    num = int(vector.shape[0])
    ordered = tf.sort(vector, direction="DESCENDING")
    cumulative = tf.cumsum(ordered)
    index = tf.range(1, num + 1, dtype=vector.dtype)
    positive = ordered - (cumulative - 1.0) / index > 0
    rho = tf.reduce_max(tf.where(positive, index, tf.ones_like(index)))
    theta = (tf.gather(cumulative, tf.cast(rho, tf.int32) - 1) - 1.0) / rho
    return tf.maximum(vector - theta, 0.0)
