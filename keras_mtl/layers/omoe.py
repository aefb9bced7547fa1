"""One-gate Mixture-of-Experts: the MMoE paper's baseline (Ma et al., KDD 2018, §4.2, eq. 5)."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_mtl.layers.backbone import Backbone
from keras_mtl.layers.experts import ExpertBank
from keras_mtl.layers.gate import gate_config, gate_spec, make_gate


@keras.saving.register_keras_serializable(package="keras_mtl")
class OMoE(Backbone):
    """OMoE: shared experts mixed by **one** gate that every task shares.

    Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts", KDD 2018, eq. 5 (the One-gate MoE baseline of §5):

        y_k = h^k(Σ_{i=1}^{n} g(x)_i f_i(x)),   g(x) = softmax(W_g x).

    Cut: `[m]`, the gated mixture `m = Σ_i g(x)_i f_i(x)` (`[batch, units]`). The gate `W_g` feeds
    every task, so it is a shared parameter and belongs to the trunk, not to a head: the cut is
    after it, and there are no task-specific backbone layers (all of them are in the towers),
    as for Shared-Bottom. `gate`: `"softmax"` (the paper's) or a DSelect-k gate (see `MMoE`),
    whose regulariser then trains this shared gate, outside the balancer.
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
        gate_spec(gate)
        self.gate = gate_config(gate)
        self.num_experts = int(num_experts)
        self.expert_units = [int(u) for u in expert_units]
        self.activation = activation
        self.experts = ExpertBank(self.num_experts, self.expert_units, activation, name="experts")
        self.shared_gate = make_gate(self.gate, self.num_experts, "gate")
        if num_tasks is not None:
            self._create_layers()

    def _create_layers(self) -> None:
        pass  # nothing per task: the towers are the heads

    def build(self, input_shape):
        input_shape = self.build_bottom(input_shape)
        self.experts.build(input_shape)
        self.shared_gate.build(input_shape)

    def _mixture(self, x, training=None):
        x = self.apply_bottom(x, training)
        return self.shared_gate(x, self.experts(x))

    def trunk(self, x, training=None):
        return [self._mixture(x, training)[0]]

    def heads(self, cut, training=None):
        return [cut[0]] * self.num_tasks, {}

    def gate_weights(self, x):
        return {"shared": self._mixture(x, training=False)[1]}

    def head_layers(self):
        return [[] for _ in range(self.num_tasks)]

    def get_config(self):
        config = super().get_config()
        config.update(num_experts=self.num_experts, expert_units=self.expert_units,
                      activation=self.activation, gate=gate_config(self.gate))
        return config
