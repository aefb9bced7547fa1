"""Weightings of the Gramian `G = J Jᵀ` (TorchJD's view of most methods): their shared machinery.

- `GramianWeighting`: `combined = w(G) @ J`, the base of every such method;
- `PreferenceWeighting`: one steered by a preference vector over tasks;
- `DualConeWeighting`: the dual-cone projections (UPGrad, DualProj) and their optional TorchJD
  conditioning of the Gramian;
- `visiting_orders`: the per-step random orders in which PCGrad and GradVac visit the tasks.
"""

from __future__ import annotations

from typing import ClassVar

import tensorflow as tf

from keras_mtl.balancers.base import BalanceResult, Weighting
from keras_mtl.balancers.linalg import finite_or_identity, gramian, weighted_sum
from keras_mtl.gradients.blocks import block_gramian, block_weighted_sum


class GramianWeighting(Weighting):
    """`combined = w(G) @ J` with `w` a function of the K×K Gramian only.

    Such a method runs from representation-level or parameter-level information alike and costs
    O(K²) beyond the gradients; it is exact at the level it is given. Heads get their own task's
    gradient (weights 1); `shared_weights` carries `w`. The K×K algebra runs in float64. The
    Gramian needs per-task gradients, so there is no losses level.
    """

    supported_levels: ClassVar[tuple[str, ...]] = ("parameters", "representation")
    default_level: ClassVar[str] = "parameters"
    needs_matrix = True
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


class DualConeWeighting(PreferenceWeighting):
    """Shared machinery of the dual-cone projections (`upgrad`, `dualproj`).

    TorchJD divides the Gramian by its trace, zeroes it when the trace is below `norm_eps` and adds
    `reg_eps · I` before solving. Both change the answer: the ridge pulls the weights towards the
    preference, so the result can conflict with a task whose gradient is short relative to the
    others (cosine −0.18 on a 3-task matrix of mixed scales), and an absolute trace threshold
    zeroes small but meaningful Gramians. Our solver needs neither (it equilibrates the problem,
    `solvers.dual_cone_weights`), so both default to 0: the projection is exact and the
    no-conflict guarantee holds up to float32 rounding of the Gramian — `⟨g_i, d⟩ ≥ −1e-6 ‖g_i‖‖d‖`
    is what the tests check at scales 1e-8 … 1e8 and norm ratios up to 1e8. Set
    `reg_eps=1e-4, norm_eps=1e-4` for TorchJD's outputs.
    """

    def __init__(self, pref_vector=None, norm_eps: float = 0.0, reg_eps: float = 0.0,
                 **kwargs):
        super().__init__(pref_vector=pref_vector, **kwargs)
        self.norm_eps = self.check_range("norm_eps", norm_eps, 0.0)
        self.reg_eps = self.check_range("reg_eps", reg_eps, 0.0)

    def conditioned(self, gram):
        if self.norm_eps == 0.0 and self.reg_eps == 0.0:
            return gram
        trace = tf.linalg.trace(gram)
        normalized = gram / tf.where(trace > 0, trace, tf.ones_like(trace))
        normalized = tf.where(trace <= self.norm_eps, tf.zeros_like(gram), normalized)
        return normalized + self.reg_eps * tf.eye(self.num_tasks, dtype=gram.dtype)

    def get_config(self):
        return {**super().get_config(), "norm_eps": self.norm_eps, "reg_eps": self.reg_eps}


def visiting_orders(seed: int, step: tf.Tensor, num_tasks: int) -> tf.Tensor:
    """`[K, K]`: row i is the order in which task i visits the tasks at this step, drawn from the
    stateless seed `(seed + i, step)` (reproducible; the same draws for every K)."""
    step = tf.cast(step, tf.int32)
    return tf.stack([
        tf.argsort(tf.random.stateless_uniform([num_tasks], seed=tf.stack([seed + i, step])))
        for i in range(num_tasks)], axis=0)
