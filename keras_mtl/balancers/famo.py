"""FAMO (Liu et al., NeurIPS 2023)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.learned import AdamParameter
from keras_mtl.balancers.registry import register


@register("famo")
class FAMO(Weighting):
    """Fast adaptive multitask optimisation: balance the tasks' log-loss decrease, O(1) per step.

    Liu et al., "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023, Algorithm 1 (official
    code Cranial-XIX/FAMO and LibMTL): with logits ξ, `z = softmax(ξ)` and `D_k = L_k + 1e-8`,
    the step minimises `Σ_k z_k log D_k / c`, `c = Σ_k z_k / D_k`, i.e. task weights

        w_k = z_k / (c · D_k)                 (they sum to 1)

    and *after* the step, with the losses `L'` of the updated model on the same batch,
    `δ = log D − log D'`, ξ takes an Adam step (learning rate 0.025, L2 weight decay 1e-3, the
    official defaults) along `∂(zᵀδ)/∂ξ = z ⊙ (δ − zᵀδ)`: tasks whose loss fell fast lose weight.

    The post-step losses are what makes FAMO awkward in a fixed training step; here the balancer
    declares `needs_post_step_losses` and `MultiTaskModel.train_step` runs one more forward pass
    on the same batch after applying the update (no backward pass), on finite steps only. Loss
    level: no per-task gradients. The official `min_losses` are 0 (LibMTL never sets them).
    """

    needs_post_step_losses = True

    def __init__(self, learning_rate: float = 0.025, weight_decay: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.learning_rate = self.check_range("learning_rate", learning_rate, 0.0)
        self.weight_decay = self.check_range("weight_decay", weight_decay, 0.0)

    def build_state(self, num_tasks):
        self.logits = AdamParameter(self, "logits", (num_tasks,), 0.0, self.learning_rate,
                                    weight_decay=self.weight_decay)

    def task_weights(self, losses, context, matrix=None):
        z = tf.nn.softmax(self.logits.value)
        shifted = tf.stop_gradient(losses) + 1e-8
        return z / (tf.reduce_sum(z / shifted) * shifted), ()

    def post_step_updates(self, losses_before, losses_after) -> tuple:
        z = tf.nn.softmax(self.logits.value)
        delta = tf.math.log(losses_before + 1e-8) - tf.math.log(losses_after + 1e-8)
        value, updates = self.logits.step(z * (delta - tf.reduce_sum(z * delta)))
        return ((self.logits.value, value), *updates)

    def get_config(self):
        return {**super().get_config(), "learning_rate": self.learning_rate,
                "weight_decay": self.weight_decay}
