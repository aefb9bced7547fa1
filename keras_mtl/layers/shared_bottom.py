"""Shared-Bottom: one MLP shared by every task (Caruana, 1997)."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_mtl.layers.backbone import Backbone
from keras_mtl.layers.mlp import MLP


@keras.saving.register_keras_serializable(package="keras_mtl")
class SharedBottom(Backbone):
    """Hard parameter sharing: `h = MLP(x)` feeds every task's tower.

    Cut: `[h]`, the bottom's output. Heads: none (every task receives `h`), so all task-specific
    parameters live in the towers.
    """

    def __init__(
        self,
        units: Sequence[int] = (64,),
        activation: str = "relu",
        dropout: float = 0.0,
        num_tasks: int | None = None,
        **kwargs,
    ):
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.units = [int(u) for u in units]
        self.activation = activation
        self.dropout = float(dropout)
        self.bottom = MLP(self.units, activation, dropout, name="bottom")
        if num_tasks is not None:
            self._create_layers()

    def _create_layers(self) -> None:
        pass

    def build(self, input_shape):
        self.bottom.build(self.build_bottom(input_shape))

    def trunk(self, x, training=None):
        return [self.bottom(self.apply_bottom(x, training), training=training)]

    def heads(self, cut, training=None):
        return [cut[0]] * self.num_tasks, {}

    def head_layers(self):
        return [[] for _ in range(self.num_tasks)]

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation, dropout=self.dropout)
        return config
