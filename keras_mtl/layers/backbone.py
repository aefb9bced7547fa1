"""The contract between a multi-task backbone and `MultiTaskModel`."""

from __future__ import annotations

from typing import Any, NamedTuple

import keras


class GatedReadout(NamedTuple):
    """Task-specific read of cut tensor `cut_index` through a gate: `term = Σ_e weights[b, e] ·
    cut[cut_index][b, e, :]`, computed on a stop-gradient copy (see `Backbone.factored_heads`)."""

    cut_index: int
    weights: Any
    term: Any


class Backbone(keras.layers.Layer):
    """A multi-task backbone split at its *cut*.

    `trunk(x)` computes the **shared representation**: the list of tensors at the cut between the
    shared trunk and the task-specific parts. `heads(cut)` maps those tensors to one representation
    per task. The split must satisfy two conditions, which the tests check for every backbone:

    1. every path from a shared parameter (or the input) to a task's output passes through the cut
       tensors, so `∂L_k/∂θ_shared = (∂cut/∂θ_shared)ᵀ ∂L_k/∂cut` (chain rule), and
    2. every variable of `head_layers()[k]` influences task k only.

    The cut tensors are treated as independent leaves by the model: a cut may contain a tensor and
    a function of it (MMoE's cut is the expert outputs *and* the gate input x), and the model
    back-propagates the cut gradient of both, which adds up the two paths exactly. A cut tensor
    that no shared parameter produces (x when the encoder has no trainable variable) is left
    out of what balancers see (`MultiTaskModel.forward`).

    Subclasses set `num_tasks` (the model does this when it is left as `None`).

    `bottom`: any Keras layer mapping the encoded features `[batch, d]` to `[batch, d']`, run first
    inside the trunk — a feature-interaction stage before the experts (`CrossNetwork`, DCN-v2, or
    `keras.Sequential([...])`). Its variables are shared parameters like the trunk's: they are
    balanced at the parameter level and receive the chained update at the representation level.
    """

    # True for a backbone that reads task-specific embeddings (STEM): the model then encodes the
    # features K + 1 times (shared first, then one encoding per task) and concatenates them.
    task_embeddings = False

    def __init__(self, num_tasks: int | None = None, bottom: keras.layers.Layer | dict | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        if isinstance(bottom, dict):
            bottom = keras.saving.deserialize_keras_object(bottom)
        if bottom is not None and not isinstance(bottom, keras.layers.Layer):
            raise TypeError(f"{type(self).__name__} bottom must be a Keras layer, got "
                            f"{type(bottom).__name__}.")
        self.bottom_stage = bottom

    def build_bottom(self, input_shape) -> tuple:
        """Builds the bottom stage on `input_shape`; returns the shape the experts receive."""
        shape = tuple(input_shape)
        if self.bottom_stage is None:
            return shape
        probe = self.bottom_stage(keras.ops.zeros((1, *shape[1:])))  # builds any layer or model
        if len(probe.shape) != 2:
            raise ValueError(f"{type(self).__name__}: the bottom must map [batch, features] to "
                             f"[batch, units]; it returned shape {tuple(probe.shape)}.")
        return shape[:-1] + (int(probe.shape[-1]),)

    def apply_bottom(self, x, training=None):
        return x if self.bottom_stage is None else self.bottom_stage(x, training=training)

    def set_num_tasks(self, num_tasks: int) -> None:
        if self.num_tasks is not None and self.num_tasks != num_tasks:
            raise ValueError(
                f"{type(self).__name__} was configured for {self.num_tasks} tasks but the model "
                f"has {num_tasks}."
            )
        if self.built:
            raise ValueError("set_num_tasks must be called before the backbone is built.")
        self.num_tasks = num_tasks
        self._create_layers()

    def set_feature_layout(self, layout) -> None:
        """The model's encoded feature layout (`FeatureSpec.encoded_layout()`: name, width,
        embedded per column block), set before the backbone is built. Backbones that read named
        features (PEPNet's priors) need it; the others ignore it."""

    def _create_layers(self) -> None:
        raise NotImplementedError

    def trunk(self, x, training=None) -> list:
        raise NotImplementedError

    def heads(self, cut: list, training=None) -> tuple[list, dict]:
        """Returns `(task_outputs, gates)`; `gates` maps a name to gate weights for inspection."""
        raise NotImplementedError

    def factored_heads(self, cut: list, training=None) -> tuple[list, dict, list[list]]:
        """`heads(cut)` plus, per task, the `GatedReadout`s through which it reads cut tensors.

        A readout `(s, w, term)` in task k's list promises that task k reads cut tensor s
        (`[batch, experts, units]`) only through `term = Σ_e w[b, e] · cut[s][b, e, :]`, and that
        `term` was computed from a stop-gradient copy of `cut[s]`. Then
        `∂L_k/∂cut[s] = w ⊗ ∂L_k/∂term` row by row, which the model keeps in that factored form
        (`keras_mtl.gradients.blocks.OuterProductBlock`) instead of materialising
        batch × experts × units numbers per task. The outputs equal `heads(cut)`'s. This default
        declares no readouts, which is always correct.
        """
        outputs, gates = self.heads(cut, training=training)
        return outputs, gates, [[] for _ in outputs]

    def head_layers(self) -> list[list[keras.layers.Layer]]:
        """`head_layers()[k]`: the layers whose variables only task k's output depends on."""
        raise NotImplementedError

    def call(self, x, training=None):
        outputs, _ = self.heads(self.trunk(x, training=training), training=training)
        return outputs

    def gate_weights(self, x) -> dict:
        """Gate weights of every gate for the rows of `x` (expert-collapse diagnostics)."""
        _, gates = self.heads(self.trunk(x, training=False), training=False)
        return gates

    def get_config(self):
        config = super().get_config()
        config["num_tasks"] = self.num_tasks
        if self.bottom_stage is not None:
            config["bottom"] = keras.saving.serialize_keras_object(self.bottom_stage)
        return config
