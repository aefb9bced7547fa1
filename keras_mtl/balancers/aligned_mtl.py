"""Aligned-MTL (Senushkin et al., CVPR 2023)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_mtl.balancers.gramian import PreferenceWeighting
from keras_mtl.balancers.registry import register

RANK_MARGIN = 100.0


@register("aligned_mtl")
class AlignedMTL(PreferenceWeighting):
    """Independent component alignment: make the task gradients orthogonal and equally strong.

    Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023,
    Algorithm 1: with `G = VΛVᵀ` restricted to its numerical rank R, the balance transformation is

        B = √λ_R · V Λ^{-1/2} Vᵀ,          weights = B p

    (`λ_R` the smallest kept eigenvalue; `p` the preference vector, default 1/K). The aligned
    gradients `Jᵀ B` have a condition number of 1. Rank cut-off: `λ > λ_max · K · ε_float32 · 100`.
    The official code and TorchJD cut at `λ_max · K · ε_float32` exactly, which is where the
    rounding of a float32 Gramian lands: for dependent gradients (e.g. three tasks, two of them
    opposite) the zero eigenvalue came out on either side of it and the update flipped between two
    rules (cosine 0.60). The margin of 100 keeps rounding noise below the cut; the price is that
    directions with `λ < 100 K ε λ_max` (gradient norm ratios beyond ≈ 300/√K along an
    eigen-direction) count as absent, as they would a hundred times further out in the official
    code. An all-zero Gramian gives `B = I`. TorchJD's published
    output on `[[-4, 1, 1], [6, 1, 1]]`, `[0.2133, 0.9673, 0.9673]`, is ours.
    """

    def weights_from_gramian(self, gram, context):
        eigenvalues, vectors = tf.linalg.eigh(gram)
        tolerance = tf.reduce_max(eigenvalues) * self.num_tasks * RANK_MARGIN * float(
            np.finfo(np.float32).eps)
        kept = eigenvalues > tolerance
        smallest = tf.reduce_min(tf.where(kept, eigenvalues, eigenvalues.dtype.max))
        inverse_sqrt = tf.where(kept, tf.math.rsqrt(tf.where(kept, eigenvalues, 1.0)), 0.0)
        balance = tf.sqrt(smallest) * tf.matmul(vectors * inverse_sqrt[None], vectors,
                                                transpose_b=True)
        balance = tf.where(tf.reduce_any(kept), balance, tf.eye(self.num_tasks, dtype=gram.dtype))
        return tf.linalg.matvec(balance, self.preference(gram.dtype)), ()
