"""PLE's exponentially scheduled task weights."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from keras_mtl.balancers.base import Weighting
from keras_mtl.balancers.registry import register


@register("ple_schedule")
class PLESchedule(Weighting):
    """Scheduled weights, PLE paper eq. 10 (Tang et al., RecSys 2020, §4.4):

        ω_k(t) = ω_{k,0} · γ_k^t

    with `t` the number of finished optimizer steps (`unit="step"`) or epochs (`unit="epoch"`).
    PLE uses it to shift emphasis between tasks over training (e.g. decay an auxiliary task).

    Args:
        initial_weights: `ω_{k,0}` per task (default: all 1).
        decay: `γ_k`, one number for every task or one per task (> 0; 1 keeps a weight constant).
        unit: `"step"` or `"epoch"`.
    """

    def __init__(
        self,
        initial_weights: Sequence[float] | None = None,
        decay: float | Sequence[float] = 1.0,
        unit: str = "epoch",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if unit not in ("step", "epoch"):
            raise ValueError(f"ple_schedule unit must be 'step' or 'epoch', got {unit!r}.")
        # Finite numbers only: γ^t with a NaN/inf γ (or ω₀) makes every weight non-finite.
        self.initial_weights = (None if initial_weights is None
                                else self.check_finite_list("initial_weights", initial_weights))
        self.decay = (self.check_finite_list("decay", decay) if isinstance(decay, Sequence)
                      else self.check_finite("decay", decay))
        decays = self.decay if isinstance(self.decay, list) else [self.decay]
        if any(d <= 0 for d in decays):
            raise ValueError(f"ple_schedule decay must be > 0, got {self.decay}.")
        self.unit = unit

    def build_state(self, num_tasks):
        for name, value in (("initial_weights", self.initial_weights), ("decay", self.decay)):
            if isinstance(value, list) and len(value) != num_tasks:
                raise ValueError(
                    f"ple_schedule {name} has {len(value)} entries but the model has {num_tasks} "
                    "tasks."
                )

    def task_weights(self, losses, context, matrix=None):
        initial = tf.constant(self.initial_weights or [1.0] * self.num_tasks, tf.float32)
        decay = tf.broadcast_to(tf.constant(self.decay, tf.float32), [self.num_tasks])
        t = tf.cast(context.step if self.unit == "step" else context.epoch, tf.float32)
        return initial * tf.pow(decay, t), ()

    def get_config(self):
        return {
            **super().get_config(),
            "initial_weights": self.initial_weights,
            "decay": self.decay,
            "unit": self.unit,
        }
