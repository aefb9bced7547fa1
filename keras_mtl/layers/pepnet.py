"""PEPNet (Chang et al., "PEPNet: Parameter and Embedding Personalized Network for Infusing with
Personalized Prior Information", KDD 2023, Kuaishou): EPNet and PPNet gates from prior features."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_mtl.layers.backbone import Backbone


@keras.saving.register_keras_serializable(package="keras_mtl")
class GateNU(keras.layers.Layer):
    """PEPNet's Gate Neural Unit (§3.2, eqs. 1-2): `x' = ReLU(x W + b)`,
    `δ = γ · Sigmoid(x' W' + b')` ∈ [0, γ]^units. γ = 2 (the paper's choice) lets a gate amplify
    as well as damp: an untrained gate (weights near 0) outputs ≈ γ/2 = 1, the identity.

    Args:
        units: the gate's output width (the width of what it scales).
        hidden_units: the hidden layer's width. The paper leaves it open; default 64.
        gamma: the scale γ.
    """

    def __init__(self, units: int, hidden_units: int = 64, gamma: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.hidden_units = int(hidden_units)
        self.gamma = float(gamma)
        self.hidden = keras.layers.Dense(self.hidden_units, activation="relu", name="hidden")
        self.out = keras.layers.Dense(self.units, activation="sigmoid", name="out")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.out.build(tuple(input_shape[:-1]) + (self.hidden_units,))

    def call(self, x):
        return self.gamma * self.out(self.hidden(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "hidden_units": self.hidden_units,
                "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="keras_mtl")
class PEPNet(Backbone):
    """PEPNet: personalised embeddings (EPNet) and personalised task towers (PPNet).

    With E the encoded features (every feature's embedding or value, concatenated), E_d the
    `domain_features`' part of it and O_prior the `prior_features`' part (e.g. user, item and
    author ids), ∅ the stop-gradient and ⊗ the element-wise product:

    - **EPNet** (§3.3, eqs. 3-4): `δ_domain = GateNU(E_d ⊕ ∅(E))`, `O_ep = δ_domain ⊗ E`. The
      general embeddings enter the gate under stop-gradient, as in the paper, so the gate
      personalises them without training them through itself.
    - **PPNet** (§3.4, eqs. 5-7): for each tower layer l, `δ^l = GateNU_l(O_prior ⊕ ∅(O_ep))`,
      split into one slice per task, and task k's layer reads its input scaled by its slice:
      `H^{l+1}_k = f((δ^l_k ⊗ H^l_k) W^l_k + b^l_k)`, `H^0_k = O_ep`.

    Cut: `[O_ep, δ^0, …, δ^{L−1}]`. Every PPNet gate is one Gate NU whose output the tasks split,
    as in the paper, so its parameters (and EPNet's, and the embeddings) are shared: they sit
    before the cut. Heads: the task towers, whose every weight serves one task. The model's own
    towers (`tower_units`) follow these PPNet towers; `tower_units=()` leaves only the logit layer.

    Left open by the paper, chosen here: the Gate NU hidden width (`gate_units`, 64); EPNet gates
    every encoded column (numerics included) and PPNet every tower layer's input; without
    `domain_features` EPNet is off (`O_ep = E`), without `prior_features` the PPNet gates read
    `∅(O_ep)` alone. PEPNet takes no `bottom` (EPNet gates the embeddings themselves).

    Args:
        domain_features: names of the features EPNet's gate reads (e.g. `["domain_id"]`).
        prior_features: names of the features PPNet's gates read (e.g. `["user_id", "item_id"]`).
        tower_units: the widths of each task's PPNet tower.
        activation: the towers' activation f.
        gate_units: the Gate NUs' hidden width.
        gamma: the Gate NUs' scale γ.
        feature_layout: the encoded layout `FeatureSpec.encoded_layout()`; the model sets it
            (`set_feature_layout`), and a saved model stores it.
    """

    def __init__(self, domain_features: Sequence[str] = (), prior_features: Sequence[str] = (),
                 tower_units: Sequence[int] = (64, 32), activation: str = "relu",
                 gate_units: int = 64, gamma: float = 2.0,
                 feature_layout: Sequence[Sequence] | None = None, num_tasks: int | None = None,
                 **kwargs):
        if kwargs.get("bottom") is not None:
            raise ValueError("PEPNet takes no bottom: EPNet gates the encoded features themselves.")
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.domain_features = list(domain_features)
        self.prior_features = list(prior_features)
        if not (len(tower_units) > 0 and all(int(u) > 0 for u in tower_units)):
            raise ValueError(f"PEPNet tower_units must be positive widths; got {tower_units!r}.")
        self.tower_units = [int(u) for u in tower_units]
        self.activation = activation
        self.gate_units = int(gate_units)
        self.gamma = float(gamma)
        self.feature_layout = None
        if feature_layout is not None:
            self.set_feature_layout(feature_layout)
        if num_tasks is not None:
            self._create_layers()

    def set_feature_layout(self, layout) -> None:
        layout = [(str(name), int(width), bool(embedded)) for name, width, embedded in layout]
        names = [name for name, _, _ in layout]
        for argument in ("domain_features", "prior_features"):
            unknown = [n for n in getattr(self, argument) if n not in names]
            if unknown:
                raise ValueError(f"PEPNet {argument} {unknown} are not features of the model; "
                                 f"its features are {names}.")
        if self.feature_layout is not None and self.feature_layout != layout:
            raise ValueError("PEPNet was configured for another feature layout than the model's.")
        self.feature_layout = layout

    def _columns(self, names: Sequence[str]) -> list[int]:
        columns, start = {}, 0
        for name, width, _ in self.feature_layout:
            columns[name] = list(range(start, start + width))
            start += width
        return [c for name in names for c in columns[name]]

    def _create_layers(self) -> None:
        self.towers = [[keras.layers.Dense(u, activation=self.activation,
                                           name=f"tower_{k}_layer_{i}")
                        for i, u in enumerate(self.tower_units)] for k in range(self.num_tasks)]

    def build(self, input_shape):
        if self.feature_layout is None:
            raise ValueError("PEPNet needs the model's feature layout before it is built; "
                             "MultiTaskModel sets it (set_feature_layout).")
        width = int(input_shape[-1])
        if sum(w for _, w, _ in self.feature_layout) != width:
            raise ValueError(f"PEPNet's feature layout is {sum(w for _, w, _ in self.feature_layout)}"
                             f" columns wide; its input has {width}.")
        self.domain_columns = self._columns(self.domain_features)
        self.prior_columns = self._columns(self.prior_features)
        self.epnet_gate = None
        if self.domain_columns:
            self.epnet_gate = GateNU(width, self.gate_units, self.gamma, name="epnet_gate")
            self.epnet_gate.build((None, len(self.domain_columns) + width))
        inputs = [width, *self.tower_units[:-1]]  # each tower layer's input width
        self.ppnet_gates = []
        for level, units in enumerate(inputs):
            gate = GateNU(self.num_tasks * units, self.gate_units, self.gamma,
                          name=f"ppnet_gate_{level}")
            gate.build((None, len(self.prior_columns) + width))
            self.ppnet_gates.append(gate)
        for tower in self.towers:
            for layer, units in zip(tower, inputs, strict=True):
                layer.build((None, units))

    def _epnet(self, x):
        if self.epnet_gate is None:
            return x, None
        domain = _columns_of(x, self.domain_columns)
        gate = self.epnet_gate(tf.concat([domain, tf.stop_gradient(x)], axis=-1))
        return gate * x, gate

    def trunk(self, x, training=None):
        personalised, _ = self._epnet(x)
        prior = _columns_of(x, self.prior_columns)
        gate_input = tf.concat([prior, tf.stop_gradient(personalised)], axis=-1)
        return [personalised, *[gate(gate_input) for gate in self.ppnet_gates]]

    def heads(self, cut, training=None):
        personalised, gates = cut[0], cut[1:]
        outputs, weights = [], {}
        for k, tower in enumerate(self.towers):
            h = personalised
            for level, (layer, gate) in enumerate(zip(tower, gates, strict=True)):
                units = gate.shape[-1] // self.num_tasks
                scale = gate[:, k * units:(k + 1) * units]
                weights[f"ppnet_{level}/task_{k}"] = scale
                h = layer(scale * h)
            outputs.append(h)
        return outputs, weights

    def gate_weights(self, x) -> dict:
        """EPNet's gate (`epnet`, when there is one) and each PPNet gate's slice per task."""
        _, gates = self.heads(self.trunk(x, training=False), training=False)
        _, epnet = self._epnet(x)
        return gates if epnet is None else {"epnet": epnet, **gates}

    def head_layers(self):
        return [list(tower) for tower in self.towers]

    def get_config(self):
        config = super().get_config()
        config.update(domain_features=self.domain_features, prior_features=self.prior_features,
                      tower_units=self.tower_units, activation=self.activation,
                      gate_units=self.gate_units, gamma=self.gamma,
                      feature_layout=[list(entry) for entry in self.feature_layout or []] or None)
        return config


def _columns_of(x, columns: list[int]):
    """`x[:, columns]` (an empty list gives a `[batch, 0]` tensor)."""
    return tf.gather(x, tf.constant(columns, tf.int32), axis=-1)
