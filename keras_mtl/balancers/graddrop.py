"""GradDrop (Chen et al., NeurIPS 2020)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Balancer, BalanceResult
from keras_mtl.balancers.registry import register


@register("graddrop")
class GradDrop(Balancer):
    """Gradient sign dropout: per coordinate, keep only the gradients of one sign, chosen at random.

    Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout",
    NeurIPS 2020, eqs. 1-3: per coordinate, the sign purity `P = ½(1 + Σ_i g_i / Σ_i |g_i|)`, a
    uniform draw `U`, and the masks `M_i = [P > U]·[g_i > 0] + [P < U]·[g_i < 0]`; the update is
    `Σ_i (ℓ_i + (1 − ℓ_i) M_i) g_i` with per-task leak `ℓ` (default 0; TorchJD's `leak`).

    At `level="parameters"` (default) a coordinate is a shared parameter, as in TorchJD. At
    `level="representation"` it is one entry of the cut gradient (a row of the batch × a unit):
    the paper instead sums `g · sign(activation)` over the batch per unit, which needs the
    activations, not given to balancers. Not a weighting (coordinate-wise), so embedding tables
    left out of the parameter-level matrix get the plain sum. Draws come from a stateless seed
    `(seed, step)`.
    """

    supported_levels = ("parameters", "representation")
    default_level = "parameters"

    def __init__(self, leak=None, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.leak = None if leak is None else [self.check_range("leak", v, 0.0, 1.0) for v in leak]
        self.seed = int(seed)

    def build_state(self, num_tasks):
        if self.leak is not None and len(self.leak) != num_tasks:
            raise ValueError(f"graddrop leak has {len(self.leak)} entries for {num_tasks} tasks.")

    def balance(self, matrix, losses, context):
        purity = 0.5 * (1.0 + tf.reduce_sum(matrix, 0) / (tf.reduce_sum(tf.abs(matrix), 0) + 1e-12))
        draw = tf.random.stateless_uniform(
            tf.shape(purity), seed=tf.stack([self.seed, tf.cast(context.step, tf.int32)]),
            dtype=matrix.dtype)
        keep = ((purity > draw)[None] & (matrix > 0)) | ((purity < draw)[None] & (matrix < 0))
        leak = tf.zeros([self.num_tasks, 1], matrix.dtype) if self.leak is None else \
            tf.constant(self.leak, matrix.dtype)[:, None]
        combined = tf.reduce_sum((leak + (1.0 - leak) * tf.cast(keep, matrix.dtype)) * matrix, 0)
        return BalanceResult(combined, tf.ones([self.num_tasks], tf.float32), ())

    def get_config(self):
        return {**super().get_config(), "leak": self.leak, "seed": self.seed}
