"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_mtl.layers.backbone import Backbone, GatedReadout
from keras_mtl.layers.experts import ExpertBank
from keras_mtl.layers.gate import MixtureGate, gate_config, gate_spec, make_gate


@keras.saving.register_keras_serializable(package="keras_mtl")
class MMoE(Backbone):
    """MMoE: shared experts, one softmax gate per task.

    Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts", KDD 2018, eqs. 6-8:

        y_k = h^k(f^k(x)),   f^k(x) = Σ_{i=1}^{n} g^k(x)_i f_i(x),   g^k(x) = softmax(W_{gk} x).

    Cut: `[E, x]` with `E = [f_1(x), …, f_n(x)]` (`[batch, n, units]`) and the gate input `x`.
    The gates `W_{gk}` are task-specific (heads); `x` is in the cut because the gates are a second
    path from the loss to the shared embeddings.

    `gate`: `"softmax"` (the paper's), `"dselect"` or a dict such as `{"type": "dselect",
    "top_k": 2, "gamma": 1.0, "entropy_weight": 1e-3}` — DSelect-k gates (`DSelectGate`) in place
    of the softmax ones; the cut is unchanged (they read `x` and mix `E` like the softmax gates).
    """

    def __init__(
        self,
        num_experts: int = 4,
        expert_units: Sequence[int] = (64,),
        activation: str = "relu",
        num_tasks: int | None = None,
        gate: str | dict = "softmax",
        **kwargs,
    ):
        super().__init__(num_tasks=num_tasks, **kwargs)
        gate_spec(gate)  # an unknown gate or hyper-parameter fails here, not at build
        self.gate = gate_config(gate)
        self.num_experts = int(num_experts)
        self.expert_units = [int(u) for u in expert_units]
        self.activation = activation
        self.experts = ExpertBank(self.num_experts, self.expert_units, activation, name="experts")
        self.gates: list[MixtureGate] = []
        if num_tasks is not None:
            self._create_layers()

    def _create_layers(self) -> None:
        self.gates = [make_gate(self.gate, self.num_experts, f"gate_{k}")
                      for k in range(self.num_tasks)]

    def build(self, input_shape):
        input_shape = self.build_bottom(input_shape)
        self.experts.build(input_shape)
        for gate in self.gates:
            gate.build(input_shape)

    def trunk(self, x, training=None):
        x = self.apply_bottom(x, training)
        return [self.experts(x), x]

    def heads(self, cut, training=None):
        experts, x = cut
        outputs, gates = [], {}
        for k, gate in enumerate(self.gates):
            mixture, weights = gate(x, experts)
            outputs.append(mixture)
            gates[f"task_{k}"] = weights
        return outputs, gates

    def factored_heads(self, cut, training=None):
        # Task k reads the experts only through its gate's mixture (eq. 6).
        experts, x = cut
        outputs, gates, readouts = [], {}, []
        for k, gate in enumerate(self.gates):
            mixture, weights, _, term = gate.detached_mixture(x, None, experts)
            outputs.append(mixture)
            gates[f"task_{k}"] = weights
            readouts.append([GatedReadout(0, weights, term)])
        return outputs, gates, readouts

    def head_layers(self):
        return [[gate] for gate in self.gates]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_experts=self.num_experts,
            expert_units=self.expert_units,
            activation=self.activation,
            gate=gate_config(self.gate),
        )
        return config
