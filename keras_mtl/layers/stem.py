"""STEM (Su et al., "STEM: Unleashing the Power of Embeddings for Multi-Task Recommendation",
AAAI 2024, Tencent): shared and task-specific embeddings, All-Forward Task-specific-Backward gates."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_mtl.layers.backbone import Backbone
from keras_mtl.layers.experts import ExpertBank
from keras_mtl.layers.gate import Gate


@keras.saving.register_keras_serializable(package="keras_mtl")
class STEM(Backbone):
    """STEM-Net: every task has its own embeddings and experts beside shared ones.

    The model encodes the features K + 1 times (`Backbone.task_embeddings`): shared embeddings
    e_S and, per task k, its own e_k (separate tables, same features). Shared experts read e_S,
    task k's experts read e_k. Task k's gate, on e_k + e_S (the official code's gate input), mixes
    **every** expert — shared, its own and the other tasks' — but the other tasks' experts enter
    under stop-gradient: the All-Forward Task-specific-Backward gate (§3.2), so task k's loss
    trains its own embeddings and experts and the shared ones, never another task's, which keeps
    each task's embeddings its own (the paper's remedy for negative transfer in embeddings).

    Cut: the shared experts' outputs `[B, n_s, d]`, e_S and every e_k. Heads: task k's experts and
    gate. Task j's experts are evaluated in task k's forward pass under stop-gradient, so they
    receive gradient from task j alone: head variables still influence only their task's
    gradients (the cut contract's condition 2), and representation-level balancing is defined:
    e_k receives a non-zero gradient from task k only.

    One STEM layer (the official code's default); the shared gate, used between stacked layers
    only, is left out. Gates are softmax over the `num_shared_experts + K·num_task_experts`
    experts, the order [task 0's, …, task K−1's, shared] as in the official code.

    Args:
        num_shared_experts: experts on the shared embeddings.
        num_task_experts: experts per task on its own embeddings.
        expert_units: every expert's layer widths.
        activation: the experts' activation.
    """

    task_embeddings = True

    def __init__(self, num_shared_experts: int = 1, num_task_experts: int = 1,
                 expert_units: Sequence[int] = (64,), activation: str = "relu",
                 num_tasks: int | None = None, **kwargs):
        if kwargs.get("bottom") is not None:
            raise ValueError("STEM takes no bottom: its experts read the embeddings directly.")
        super().__init__(num_tasks=num_tasks, **kwargs)
        self.num_shared_experts = int(num_shared_experts)
        self.num_task_experts = int(num_task_experts)
        self.expert_units = [int(u) for u in expert_units]
        self.activation = activation
        self.shared_experts = ExpertBank(self.num_shared_experts, self.expert_units, activation,
                                         name="shared_experts")
        if num_tasks is not None:
            self._create_layers()

    def _create_layers(self) -> None:
        self.task_experts = [ExpertBank(self.num_task_experts, self.expert_units, self.activation,
                                        name=f"task_{k}_experts") for k in range(self.num_tasks)]
        total = self.num_shared_experts + self.num_tasks * self.num_task_experts
        self.gates = [Gate(total, name=f"gate_{k}") for k in range(self.num_tasks)]

    def build(self, input_shape):
        width = int(input_shape[-1])
        if width % (self.num_tasks + 1):
            raise ValueError(f"STEM's input ({width} columns) is not K + 1 = {self.num_tasks + 1} "
                             "encodings of the features: build it inside a MultiTaskModel.")
        self.embedding_width = width // (self.num_tasks + 1)
        shape = (None, self.embedding_width)
        self.shared_experts.build(shape)
        for bank, gate in zip(self.task_experts, self.gates, strict=True):
            bank.build(shape)
            gate.build(shape)

    def _split(self, x) -> list:
        """`[e_S, e_0, …, e_{K−1}]` from the model's concatenated encodings."""
        return tf.split(x, self.num_tasks + 1, axis=-1)

    def trunk(self, x, training=None):
        shared, *own = self._split(x)
        return [self.shared_experts(shared), shared, *own]

    def heads(self, cut, training=None):
        shared_experts, shared, *own = cut
        task_experts = [bank(e) for bank, e in zip(self.task_experts, own, strict=True)]
        outputs, gates = [], {}
        for k, gate in enumerate(self.gates):
            experts = tf.concat(
                [e if j == k else tf.stop_gradient(e) for j, e in enumerate(task_experts)]
                + [shared_experts], axis=1)
            mixture, weights = gate(own[k] + shared, experts)
            outputs.append(mixture)
            gates[f"task_{k}"] = weights
        return outputs, gates

    def head_layers(self):
        return [[bank, gate] for bank, gate in zip(self.task_experts, self.gates, strict=True)]

    def get_config(self):
        config = super().get_config()
        config.update(num_shared_experts=self.num_shared_experts,
                      num_task_experts=self.num_task_experts, expert_units=self.expert_units,
                      activation=self.activation)
        return config
