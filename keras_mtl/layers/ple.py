"""Progressive Layered Extraction and its single-level form CGC (Tang et al., RecSys 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from keras_mtl.layers.backbone import Backbone, GatedReadout
from keras_mtl.layers.experts import ExpertBank
from keras_mtl.layers.gate import gate_config, gate_spec, make_gate


@keras.saving.register_keras_serializable(package="keras_mtl")
class PLE(Backbone):
    """PLE: stacked extraction networks of task-specific and shared experts.

    Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
    Personalized Recommendations", RecSys 2020. With `E_k^j` task k's experts and `E_s^j` the shared
    experts at level j:

    - eq. 2-4 (CGC): `g^k(x) = w^k(x) S^k(x)`, `w^k(x) = softmax(W_g^k x)`,
      `S^k(x) = [E_k(x), E_s(x)]` (task k's experts stacked with the shared ones);
    - eq. 5-7 (multi-level): `g^{k,j}(x) = w^{k,j}(g^{k,j-1}(x)) S^{k,j}(x)` where task k's experts
      at level j read `g^{k,j-1}`, the shared experts read the shared path `g^{s,j-1}`, and at every
      level but the last a **shared gate** selects over *all* experts of the level
      (`g^{s,j} = w^{s,j}(g^{s,j-1}) [E_1^j, …, E_K^j, E_s^j]`) to form the next shared path;
    - `g^{k,0} = g^{s,0} = x`. The last level has no shared gate; its task outputs feed the towers.

    Cut: the levels below the last are entirely shared (their task experts feed the shared gate, so
    they influence every task). With L levels the cut is `[E_s^L, g^{1,L-1}, …, g^{K,L-1}]`: the last
    level's shared-expert outputs and each task's input to the last level. For L = 1 (CGC) every task
    input is `x`, so the cut is `[E_s, x]`. The last level's task experts, task gates and the towers are
    the task-specific heads.

    `gate`: `"softmax"` (the paper's), `"dselect"` or a dict such as `{"type": "dselect",
    "top_k": 2, "entropy_weight": 1e-3}`: every gate (task and shared, every level) becomes a
    DSelect-k gate (`DSelectGate`); the cut is unchanged. The regulariser of a gate below the last
    level trains that (shared) gate only and is added outside the balancer, like every layer loss.
    """

    def __init__(
        self,
        num_levels: int = 2,
        shared_experts: int = 2,
        task_experts: int = 1,
        expert_units: Sequence[int] = (64,),
        activation: str = "relu",
        num_tasks: int | None = None,
        gate: str | dict = "softmax",
        **kwargs,
    ):
        super().__init__(num_tasks=num_tasks, **kwargs)
        gate_spec(gate)  # an unknown gate or hyper-parameter fails here, not at build
        self.gate = gate_config(gate)
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}.")
        if shared_experts < 1 or task_experts < 1:
            raise ValueError(
                "PLE needs at least one shared and one task expert per task; got "
                f"shared_experts={shared_experts}, task_experts={task_experts}."
            )
        self.num_levels = int(num_levels)
        self.shared_experts = int(shared_experts)
        self.task_experts = int(task_experts)
        self.expert_units = [int(u) for u in expert_units]
        self.activation = activation
        self.levels: list[dict] = []
        if num_tasks is not None:
            self._create_layers()

    def _create_layers(self) -> None:
        num_tasks = self.num_tasks
        per_task_gate = self.task_experts + self.shared_experts
        all_experts = num_tasks * self.task_experts + self.shared_experts
        self.shared_banks, self.task_banks = [], []
        self.task_gates, self.shared_gates = [], []
        for j in range(self.num_levels):
            last = j == self.num_levels - 1
            self.shared_banks.append(
                ExpertBank(self.shared_experts, self.expert_units, self.activation,
                           name=f"level_{j}_shared_experts")
            )
            self.task_banks.append([
                ExpertBank(self.task_experts, self.expert_units, self.activation,
                           name=f"level_{j}_task_{k}_experts")
                for k in range(num_tasks)
            ])
            self.task_gates.append([
                make_gate(self.gate, per_task_gate, f"level_{j}_task_{k}_gate")
                for k in range(num_tasks)
            ])
            if not last:
                self.shared_gates.append(make_gate(self.gate, all_experts,
                                                   f"level_{j}_shared_gate"))

    def build(self, input_shape):
        shape = self.build_bottom(input_shape)
        units = self.expert_units[-1]
        for j in range(self.num_levels):
            self.shared_banks[j].build(shape)
            for k in range(self.num_tasks):
                self.task_banks[j][k].build(shape)
                self.task_gates[j][k].build(shape)
            if j < self.num_levels - 1:
                self.shared_gates[j].build(shape)
            shape = shape[:-1] + (units,)

    def _level(self, j, task_inputs, shared_input, gates):
        shared = self.shared_banks[j](shared_input)
        task_experts = [bank(inp) for bank, inp in zip(self.task_banks[j], task_inputs, strict=True)]
        outputs = []
        for k, gate in enumerate(self.task_gates[j]):
            mixture, weights = gate(task_inputs[k], ops.concatenate([task_experts[k], shared], 1))
            outputs.append(mixture)
            gates[f"level_{j}/task_{k}"] = weights
        return outputs, shared, task_experts

    def _lower_levels(self, x, gates):
        task_inputs, shared_input = [x] * self.num_tasks, x
        for j in range(self.num_levels - 1):
            outputs, shared, task_experts = self._level(j, task_inputs, shared_input, gates)
            shared_input, weights = self.shared_gates[j](
                shared_input, ops.concatenate([*task_experts, shared], axis=1)
            )
            gates[f"level_{j}/shared"] = weights
            task_inputs = outputs
        return task_inputs, shared_input

    def trunk(self, x, training=None):
        return self._trunk(x, {}, training)

    def _trunk(self, x, gates, training=None):
        x = self.apply_bottom(x, training)
        task_inputs, shared_input = self._lower_levels(x, gates)
        shared = self.shared_banks[-1](shared_input)
        if self.num_levels == 1:
            return [shared, x]
        return [shared, *task_inputs]

    def heads(self, cut, training=None):
        shared = cut[0]
        task_inputs = [cut[1]] * self.num_tasks if self.num_levels == 1 else list(cut[1:])
        outputs, gates = [], {}
        last = self.num_levels - 1
        for k in range(self.num_tasks):
            experts = self.task_banks[last][k](task_inputs[k])
            mixture, weights = self.task_gates[last][k](
                task_inputs[k], ops.concatenate([experts, shared], axis=1)
            )
            outputs.append(mixture)
            gates[f"level_{last}/task_{k}"] = weights
        return outputs, gates

    def factored_heads(self, cut, training=None):
        # Task k reads the last level's shared experts only through its gate's mixture (eq. 4).
        shared = cut[0]
        task_inputs = [cut[1]] * self.num_tasks if self.num_levels == 1 else list(cut[1:])
        outputs, gates, readouts = [], {}, []
        last = self.num_levels - 1
        for k in range(self.num_tasks):
            experts = self.task_banks[last][k](task_inputs[k])
            mixture, weights, shared_weights, term = self.task_gates[last][k].detached_mixture(
                task_inputs[k], experts, shared)
            outputs.append(mixture)
            gates[f"level_{last}/task_{k}"] = weights
            readouts.append([GatedReadout(0, shared_weights, term)])
        return outputs, gates, readouts

    def gate_weights(self, x):
        gates = {}
        cut = self._trunk(x, gates)
        gates.update(self.heads(cut)[1])
        return gates

    def head_layers(self):
        last = self.num_levels - 1
        return [[self.task_banks[last][k], self.task_gates[last][k]] for k in range(self.num_tasks)]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_levels=self.num_levels,
            shared_experts=self.shared_experts,
            task_experts=self.task_experts,
            expert_units=self.expert_units,
            activation=self.activation,
            gate=gate_config(self.gate),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mtl")
class CGC(PLE):
    """Customized Gate Control: a single PLE extraction level (PLE paper eqs. 2-4, §4.2)."""

    def __init__(
        self,
        shared_experts: int = 2,
        task_experts: int = 1,
        expert_units: Sequence[int] = (64,),
        activation: str = "relu",
        num_tasks: int | None = None,
        gate: str | dict = "softmax",
        **kwargs,
    ):
        kwargs.pop("num_levels", None)
        super().__init__(
            num_levels=1,
            shared_experts=shared_experts,
            task_experts=task_experts,
            expert_units=expert_units,
            activation=activation,
            num_tasks=num_tasks,
            gate=gate,
            **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        config.pop("num_levels")
        return config
