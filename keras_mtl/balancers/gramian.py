"""Balancers that are weightings of the Gramian `G = J Jᵀ` (TorchJD's view of most methods)."""

from __future__ import annotations

from typing import ClassVar

import tensorflow as tf

from keras_mtl.balancers.base import Balancer, BalanceResult
from keras_mtl.balancers.blocks import block_gramian, block_weighted_sum
from keras_mtl.balancers.ops import gramian, weighted_sum


class GramianWeighting(Balancer):
    """`combined = w(G) @ J` with `w` a function of the K×K Gramian only.

    Such a method runs from representation-level or parameter-level information alike and costs
    O(K²) beyond the gradients; it is exact at the level it is given. Heads get their own task's
    gradient (weights 1); `shared_weights` carries `w`. The K×K algebra runs in float64.
    """

    supported_levels: ClassVar[tuple[str, ...]] = ("parameters", "representation")
    default_level: ClassVar[str] = "parameters"
    is_weighting = True
    balances_float64 = True

    def weights_from_gramian(self, gram: tf.Tensor, context) -> tuple[tf.Tensor, tuple]:
        raise NotImplementedError

    def balance(self, matrix, losses, context):
        return self._result(gramian(matrix), lambda w: weighted_sum(matrix, w), context,
                            matrix.dtype)

    def balance_blocks(self, blocks, losses, context):
        # The Gramian and the combination straight from the blocks: at the representation level
        # the [K, D] matrix is never built, and outer-product blocks are never materialised.
        return self._result(block_gramian(blocks), lambda w: block_weighted_sum(blocks, w),
                            context, tf.float32)

    def _result(self, gram, combine, context, dtype) -> BalanceResult:
        gram = finite_or_identity(tf.cast(gram, tf.float64))
        weights, updates = self.weights_from_gramian(gram, context)
        weights = tf.cast(weights, dtype)
        ones = tf.ones([self.num_tasks], tf.float32)
        return BalanceResult(combine(weights), ones, tuple(updates), shared_weights=weights)


class PreferenceWeighting(GramianWeighting):
    """A Gramian weighting steered by a preference vector `p` over tasks (default: every entry
    `default_preference`; TorchJD's `pref_vector`)."""

    default_preference: ClassVar[str] = "mean"  # 1/K each; "sum": 1 each

    def __init__(self, pref_vector=None, **kwargs):
        super().__init__(**kwargs)
        self.pref_vector = (None if pref_vector is None
                            else self.check_finite_list("pref_vector", pref_vector))

    def build_state(self, num_tasks):
        if self.pref_vector is not None and len(self.pref_vector) != num_tasks:
            raise ValueError(f"{self.name_in_registry} pref_vector has {len(self.pref_vector)} "
                             f"entries for {num_tasks} tasks.")

    def preference(self, dtype) -> tf.Tensor:
        if self.pref_vector is not None:
            return tf.constant(self.pref_vector, dtype)
        value = 1.0 / self.num_tasks if self.default_preference == "mean" else 1.0
        return tf.fill([self.num_tasks], tf.constant(value, dtype))

    def get_config(self):
        return {**super().get_config(), "pref_vector": self.pref_vector}


def pseudo_inverse(matrices: tf.Tensor, rcond: float = 1e-12) -> tf.Tensor:
    """Moore-Penrose inverse of a batch of symmetric matrices (eigen-decomposition; XLA-safe)."""
    eigenvalues, eigenvectors = tf.linalg.eigh(finite_or_identity(matrices))
    cutoff = rcond * tf.reduce_max(tf.abs(eigenvalues), axis=-1, keepdims=True)
    inverse = tf.where(tf.abs(eigenvalues) > cutoff, 1.0 / eigenvalues, tf.zeros_like(eigenvalues))
    return tf.matmul(eigenvectors * inverse[..., None, :], eigenvectors, transpose_b=True)


def finite_or_identity(matrices: tf.Tensor) -> tf.Tensor:
    """`matrices`, or identities where one holds a NaN/inf. A non-finite gradient makes the model
    skip the step anyway, but TensorFlow's CPU eigen/LU kernels raise on such input (XLA's do
    not), which would stop training instead of skipping one step."""
    finite = tf.reduce_all(tf.math.is_finite(matrices), axis=[-2, -1], keepdims=True)
    identity = tf.eye(tf.shape(matrices)[-1], batch_shape=tf.shape(matrices)[:-2],
                      dtype=matrices.dtype)
    return tf.where(finite, matrices, identity)


def visiting_orders(seed: int, step: tf.Tensor, num_tasks: int) -> tf.Tensor:
    """`[K, K]`: row i is the order in which task i visits the tasks at this step, drawn from the
    stateless seed `(seed + i, step)` (reproducible; the same draws for every K)."""
    step = tf.cast(step, tf.int32)
    return tf.stack([
        tf.argsort(tf.random.stateless_uniform([num_tasks], seed=tf.stack([seed + i, step])))
        for i in range(num_tasks)], axis=0)
