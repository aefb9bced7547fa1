"""Uncertainty weighting (Kendall et al., CVPR 2018)."""

from __future__ import annotations

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.learned import AdamParameter
from keras_mtl.balancers.registry import register


@register("uw")
class UncertaintyWeighting(Weighting):
    """Homoscedastic-uncertainty weighting with learned log-variances.

    Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
    Geometry and Semantics", CVPR 2018, eqs. 7 and 10, in LibMTL's uniform form with `s = log σ²`:

        L = Σ_k ½ exp(−s_k) L_k + ½ s_k,     w_k = ½ exp(−s_k),     ∂L/∂s_k = ½ (1 − exp(−s_k) L_k)

    (the paper writes 1/σ² for classification and 1/(2σ²) for regression; LibMTL and most
    re-implementations use the ½ form for every task, so do we). `s` starts at 0 and is learned by
    Adam (`learning_rate`, default 1e-3, Keras' Adam default: the paper trains `s` with the model's
    optimizer) on the same step's losses; the weights used at a step are those before its update.
    Its fixed point is `exp(s_k) = L_k`: each task weighted by the inverse of its loss.
    """

    def __init__(self, learning_rate: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.learning_rate = self.check_range("learning_rate", learning_rate, 0.0)

    def build_state(self, num_tasks):
        self.log_variance = AdamParameter(self, "log_variance", (num_tasks,), 0.0,
                                          self.learning_rate)

    def task_weights(self, losses, context, matrix=None):
        s = self.log_variance.value
        gradient = 0.5 * (1.0 - tf.exp(-s) * tf.stop_gradient(losses))
        value, updates = self.log_variance.step(gradient)
        return 0.5 * tf.exp(-s), ((self.log_variance.value, value), *updates)

    def get_config(self):
        return {**super().get_config(), "learning_rate": self.learning_rate}
