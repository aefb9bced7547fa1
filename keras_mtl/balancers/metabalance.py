"""MetaBalance (He et al., WWW 2022)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Balancer, BalanceResult
from keras_mtl.balancers.linalg import segment_norms, split_segments, weighted_sum
from keras_mtl.balancers.registry import register


@register("metabalance")
class MetaBalance(Balancer):
    """Per-tensor magnitude balancing of auxiliary gradients towards a target task.

    He et al., "MetaBalance: Improving Multi-Task Recommendations via Adapting Gradient Magnitudes
    of Auxiliary Tasks", WWW 2022 (arXiv 2203.06801), Algorithm 1. For every shared parameter tensor
    p and task k (target task 0 unless `target_task` says otherwise):

        m_k ← β·m_k + (1 − β)·‖∇_p L_k‖
        G_k ← r·(m_0 / m_k)·∇_p L_k + (1 − r)·∇_p L_k       (the target's own G_0 = ∇_p L_0)
        update p with Σ_k G_k

    `r` (`relax_factor`, default 0.7) pulls each auxiliary gradient's magnitude towards the
    target's; r = 0 is plain summation, r = 1 gives every auxiliary gradient the target's moving
    magnitude. `β` (default 0.9) smooths the magnitudes.

    Choices where the official code (facebookresearch/MetaBalance) is silent or fragile:
    - ε (`epsilon`) guards `m_0 / (m_k + ε)`: the official code divides by `m_k` alone, which is
      0/0 = NaN for a tensor a task does not reach (or a batch with none of its rows).
    - No bias correction, as in the official code: `m_0 / m_k` does not need it, because every
      moving average starts at 0 and carries the same `1 − β^t` factor.
    - r = 1 is allowed (the official code rejects r >= 1) so the limit can be tested.
    - Shared parameters only, never the towers (the official code balances whatever parameters
      the optimizer holds). At the parameter level embedding tables are left out of the balanced
      matrix unless the model densifies them (`dense_embedding_gradients=True`); left out, they
      get the plain sum of task gradients.
    - At the representation level the "tensors" are the cut tensors (batch included).
    """

    supported_levels = ("parameters", "representation")
    default_level = "parameters"

    def __init__(self, relax_factor: float = 0.7, beta: float = 0.9, target_task: int | str = 0,
                 epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.relax_factor = self.check_range("relax_factor", relax_factor, 0.0, 1.0)
        self.beta = self.check_range("beta", beta, 0.0, 1.0, high_open=True)
        self.target_task = target_task
        self.epsilon = self.check_range("epsilon", epsilon, 0.0)

    def build_state(self, num_tasks):
        self.target_index = self.task_index(self.target_task)
        self.magnitudes = self.add_weight(shape=(num_tasks, self.num_segments),
                                          initializer="zeros", trainable=False, name="magnitudes")

    def balance(self, matrix, losses, context):
        sizes = context.layout.segment_sizes
        if sizes is not None and len(sizes) != self.num_segments:
            raise ValueError(
                f"metabalance was built for {self.num_segments} tensors but received {len(sizes)}."
            )
        norms = segment_norms(matrix, sizes)  # [K, S]
        magnitudes = self.beta * self.magnitudes + (1.0 - self.beta) * norms
        target = magnitudes[self.target_index]
        ratio = target / (magnitudes + self.epsilon)
        factors = self.relax_factor * ratio + (1.0 - self.relax_factor)
        is_target = tf.one_hot(self.target_index, self.num_tasks, dtype=tf.float32)[:, None]
        factors = is_target + (1.0 - is_target) * factors
        combined = tf.concat(
            [weighted_sum(block, factors[:, s])
             for s, block in enumerate(split_segments(matrix, sizes))],
            axis=0,
        )
        ones = tf.ones([self.num_tasks], tf.float32)
        return BalanceResult(combined, ones, ((self.magnitudes, magnitudes),))

    def get_config(self):
        return {**super().get_config(), "relax_factor": self.relax_factor, "beta": self.beta,
                "target_task": self.target_task, "epsilon": self.epsilon}
