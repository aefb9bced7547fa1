"""GradNorm (Chen et al., ICML 2018)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import BalanceResult, Weighting
from keras_mtl.balancers.learned import AdamParameter
from keras_mtl.balancers.linalg import row_norms
from keras_mtl.balancers.registry import register
from keras_mtl.gradients.blocks import block_row_norms, block_weighted_sum


@register("gradnorm")
class GradNorm(Weighting):
    """Learned task weights that equalise weighted gradient norms, adjusted by training rates.

    Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask
    Networks", ICML 2018, eqs. 1-2: with `G_k = w_k ‖∇_W L_k‖`, `Ḡ = mean_k G_k`, the inverse
    training rate `r_k = L̃_k / mean_j L̃_j`, `L̃_k = L_k / L_k(0)`,

        L_grad = Σ_k |G_k − Ḡ · r_k^α|       (Ḡ r^α held constant),
        ∂L_grad/∂w_k = sign(G_k − Ḡ r_k^α) · ‖∇_W L_k‖

    The weights take an Adam step on that gradient (learning rate 1e-3, Keras' Adam default; the
    paper uses the model's optimizer) and are renormalised to `Σ w = K` after every step
    (floored at 0 first). `W` is the paper's last shared layer; here the balanced level: the
    representation (default — its norms cost only the heads) or the shared parameters.
    `L_k(0)` is the task's first non-zero loss. α = 1.5 (LibMTL's default; the paper tunes it).
    """

    supported_levels = ("representation", "parameters")
    default_level = "representation"
    needs_matrix = True

    def __init__(self, alpha: float = 1.5, learning_rate: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.alpha = self.check_range("alpha", alpha, 0.0)
        self.learning_rate = self.check_range("learning_rate", learning_rate, 0.0)

    def build_state(self, num_tasks):
        self.weights_ = AdamParameter(self, "task_weights", (num_tasks,), 1.0, self.learning_rate)
        self.initial_losses = self.add_weight(shape=(num_tasks,), initializer="zeros",
                                              trainable=False, name="initial_losses")

    def weights_and_updates(self, losses, norms):
        losses = tf.stop_gradient(losses)
        weights = self.weights_.value
        initial = tf.where(self.initial_losses > 0, self.initial_losses, losses)
        rate = tf.math.divide_no_nan(losses, initial)
        inverse_rate = tf.math.divide_no_nan(rate, tf.reduce_mean(rate))
        scaled = weights * norms
        target = tf.reduce_mean(scaled) * tf.pow(inverse_rate, self.alpha)
        value, updates = self.weights_.step(tf.sign(scaled - target) * norms)
        value = tf.maximum(value, 0.0)
        total = tf.reduce_sum(value)
        value = tf.where(total > 0, self.num_tasks * value / tf.where(total > 0, total, 1.0),
                         tf.ones_like(value))
        return weights, ((self.weights_.value, value), (self.initial_losses, initial), *updates)

    def task_weights(self, losses, context, matrix=None):
        return self.weights_and_updates(losses, row_norms(matrix))

    def balance_blocks(self, blocks, losses, context):
        weights, updates = self.weights_and_updates(losses, block_row_norms(blocks))
        return BalanceResult(block_weighted_sum(blocks, weights), weights, updates,
                             shared_weights=weights)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "learning_rate": self.learning_rate}
