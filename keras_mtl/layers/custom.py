"""`CustomBackbone`: your own Keras trunk (and per-task heads), balanced like ours."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_mtl.layers.backbone import Backbone


@keras.saving.register_keras_serializable(package="keras_mtl")
class CustomBackbone(Backbone):
    """Any Keras layer or model as the shared trunk; its outputs are the cut.

    `trunk`: maps the encoded features `[batch, d]` to one tensor or a list of tensors, the
    shared representation every balancer works at (representation level: the gradients at these
    outputs; parameter level: the gradients w.r.t. the trunk's variables). `heads`: optional, one
    layer per task mapping the cut (the tensor, or the list when the trunk returns several) to
    that task's representation; their variables are the task's own. Without heads every task
    reads the cut as it is (one `[batch, units]` tensor, or the concatenation of several).

    The cut contract (`Backbone`) holds by construction: the heads read the trunk only through its
    outputs. Each head must be its own layer object (a layer shared by two tasks would not be
    task-specific). A custom trunk is serialised like any Keras layer: a subclassed layer needs
    `keras.saving.register_keras_serializable` for `.keras` files to load it.

        trunk = keras.Sequential([km.layers.CrossNetwork(2), keras.layers.Dense(64, "relu")])
        backbone = km.layers.CustomBackbone(trunk)
    """

    def __init__(self, trunk: keras.layers.Layer | dict,
                 heads: Sequence[keras.layers.Layer | dict] | None = None,
                 num_tasks: int | None = None, **kwargs):
        trunk = _layer(trunk, "trunk")
        heads = None if heads is None else [_layer(h, f"heads[{k}]") for k, h in enumerate(heads)]
        if heads is not None:
            if len({id(h) for h in heads}) != len(heads):
                raise ValueError("CustomBackbone heads must be distinct layers, one per task.")
            if num_tasks is not None and num_tasks != len(heads):
                raise ValueError(f"CustomBackbone has {len(heads)} heads for num_tasks={num_tasks}.")
            num_tasks = len(heads)
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.trunk_layer = trunk
        self.task_heads = heads or []

    def _create_layers(self) -> None:
        pass  # the heads, when any, came with the constructor

    def build(self, input_shape):
        shape = self.build_bottom(input_shape)
        cut = self._outputs(self.trunk_layer(keras.ops.zeros((1, *shape[1:]))))
        for head in self.task_heads:
            head(self._head_input(cut))

    def trunk(self, x, training=None):
        return self._outputs(self.trunk_layer(self.apply_bottom(x, training), training=training))

    def heads(self, cut, training=None):
        if self.task_heads:
            return [head(self._head_input(cut), training=training) for head in self.task_heads], {}
        shared = cut[0] if len(cut) == 1 else keras.ops.concatenate(list(cut), axis=-1)
        return [shared] * self.num_tasks, {}

    def head_layers(self):
        if self.task_heads:
            return [[head] for head in self.task_heads]
        return [[] for _ in range(self.num_tasks)]

    @staticmethod
    def _outputs(outputs) -> list:
        return list(outputs) if isinstance(outputs, list | tuple) else [outputs]

    @staticmethod
    def _head_input(cut):
        return cut[0] if len(cut) == 1 else list(cut)

    def get_config(self):
        config = super().get_config()
        config["trunk"] = keras.saving.serialize_keras_object(self.trunk_layer)
        config["heads"] = ([keras.saving.serialize_keras_object(h) for h in self.task_heads]
                           if self.task_heads else None)
        return config


def _layer(value, what: str) -> keras.layers.Layer:
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if not isinstance(value, keras.layers.Layer):
        raise TypeError(f"CustomBackbone {what} must be a Keras layer or model, got "
                        f"{type(value).__name__}.")
    return value
