"""HoME: Hierarchy of Multi-Gate Experts (Wang et al., Kuaishou, arXiv 2408.05430)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from keras_mtl.layers.backbone import Backbone, GatedReadout
from keras_mtl.layers.experts import ExpertBank
from keras_mtl.layers.gate import Gate


@keras.saving.register_keras_serializable(package="keras_mtl")
class HoME(Backbone):
    """HoME: a two-level hierarchy of experts over meta-task groups, with normalised Swish
    experts, feature-gates and self-gates.

    Wang, Cao, Fu, Gai, Zhou, "HoME: Hierarchy of Multi-Gate Experts for Multi-Task Learning at
    Kuaishou", arXiv 2408.05430 (2024), §3. Its four mechanisms, as built here:

    - **expert normalisation & Swish**: every expert layer is `Swish(BN(W h + b))` (`ExpertBank`
      with `normalization=True`, `activation="swish"`), so no expert's outputs are mostly zero
      and all experts share one scale before a gate weighs them.
    - **hierarchy mask**: tasks form meta-task groups (`task_groups`). Level 1 has shared experts
      `S¹` and per-group experts `G¹_g`, all reading `x`; group g's meta representation is
      `m_g = Gate_g(x)·[G¹_g, S¹] + Self_g(x)·G¹_g`, and the shared one is
      `m_s = Gate_s(x)·[G¹_1, …, G¹_G, S¹] + Self_s(x)·S¹`. Level 2 has shared experts
      `S² = E(m_s)`, group experts `G²_g = E(m_g)` and task experts `T_t = E(m_{g(t)})`; task t's
      output is `o_t = Gate_t(m_{g(t)})·[T_t, G²_{g(t)}, S²] + Self_t(m_{g(t)})·T_t`. A task
      therefore only sees the experts of its own group and the shared ones (the mask).
    - **feature-gate**: each expert reads its own `v ⊙ 2σ(v A B)` of its input v, with a
      rank-`feature_gate_rank` LoRA-style factorisation (`ExpertBank(feature_gate_rank=...)`);
      `None` turns it off.
    - **self-gate**: every output adds a mixture of only its *own* specific experts (the group's,
      the shared meta output's `S¹`, the task's), weighted by a sigmoid gate when there is one
      such expert and a softmax gate over them otherwise — a residual path that keeps the
      specific experts trained when the main gate favours the shared ones.

    Choices the paper leaves open (there is no public official code):

    - Two levels exactly; level-1 experts read the encoded features `x`, level-2 experts and
      gates read the group's meta representation `m_g` (`m_s` for the level-2 shared experts).
    - `m_s` mixes every level-1 expert, as PLE's shared gate does; the gates are softmax gates
      (MMoE eq. 7) over the listed experts, reading the same input as the experts they mix.
    - Normalisation: Keras `BatchNormalization` (momentum 0.99, ε = 10⁻³) per expert and unit
      after each expert layer, before Swish, and no bias before it (BN's β is the bias); under a
      distribution strategy its batch statistics are per replica. The moving statistics are
      updated by every training-mode forward pass (a balancer that runs extra forward passes —
      the Hessian term, FAMO's post-step losses — updates them more than once a step).
    - Feature-gate: one per expert at both levels; `B` starts at zero (gate = 1).
    - `task_groups`: lists of task indices (the model's task order) covering every task once;
      `None` is one group of all tasks (no meta-task structure given). Expert counts are per
      bank: `shared_experts` at each level, `group_experts` per group per level, `task_experts`
      per task.

    Cut: everything at level 1 feeds `m_s` (hence every task), and `S²` and `G²_g` are shared by
    all tasks / the group's tasks, so they are the trunk. The cut is
    `[S², G²_1, …, G²_G, m_1, …, m_G]`: the level-2 shared and group expert outputs and each
    group's meta representation. Task t's experts `T_t`, gate and self-gate read only `m_{g(t)}`
    and `G²_{g(t)}`, `S²`, so they are its head (condition 2), and every path from a shared
    parameter to o_t passes through the cut (condition 1). Task t reads `S²` and `G²_{g(t)}` only
    through its gate's mixture, which `factored_heads` declares as two `GatedReadout`s.
    """

    def __init__(
        self,
        task_groups: Sequence[Sequence[int]] | None = None,
        shared_experts: int = 1,
        group_experts: int = 1,
        task_experts: int = 1,
        expert_units: Sequence[int] = (64,),
        feature_gate_rank: int | None = 4,
        normalization: bool = True,
        activation: str = "swish",
        num_tasks: int | None = None,
        **kwargs,
    ):
        super().__init__(num_tasks=num_tasks, **kwargs)
        if min(shared_experts, group_experts, task_experts) < 1:
            raise ValueError(
                "HoME needs at least one shared, group and task expert; got "
                f"shared_experts={shared_experts}, group_experts={group_experts}, "
                f"task_experts={task_experts}.")
        self.task_groups = None if task_groups is None else [[int(t) for t in g]
                                                             for g in task_groups]
        self.shared_experts = int(shared_experts)
        self.group_experts = int(group_experts)
        self.task_experts = int(task_experts)
        self.expert_units = [int(u) for u in expert_units]
        self.feature_gate_rank = None if feature_gate_rank is None else int(feature_gate_rank)
        self.normalization = bool(normalization)
        self.activation = activation
        if num_tasks is not None:
            self._create_layers()

    # ------------------------------------------------------------------------------ layers
    def _bank(self, n: int, name: str) -> ExpertBank:
        # No bias before a batch norm: BN subtracts the batch mean (its gradient is exactly zero)
        # and its β is the bias.
        return ExpertBank(n, self.expert_units, self.activation, use_bias=not self.normalization,
                          normalization=self.normalization,
                          feature_gate_rank=self.feature_gate_rank, name=name)

    def _create_layers(self) -> None:
        groups = self.task_groups if self.task_groups is not None else [
            list(range(self.num_tasks))]
        members = sorted(t for g in groups for t in g)
        if members != list(range(self.num_tasks)) or not all(groups):
            raise ValueError(f"HoME task_groups must be non-empty groups that cover tasks "
                             f"0..{self.num_tasks - 1} once each; got {groups}.")
        self._groups = groups
        self.group_of = {t: g for g, group in enumerate(groups) for t in group}
        num_groups = len(groups)
        s, ge, te = self.shared_experts, self.group_experts, self.task_experts
        self.shared_1 = self._bank(s, "level_0_shared_experts")
        self.group_1 = [self._bank(ge, f"level_0_group_{g}_experts") for g in range(num_groups)]
        self.group_gates_1 = [Gate(ge + s, name=f"level_0_group_{g}_gate")
                              for g in range(num_groups)]
        self.group_self_1 = [self._self_gate(ge, f"level_0_group_{g}_self_gate")
                             for g in range(num_groups)]
        self.shared_gate_1 = Gate(num_groups * ge + s, name="level_0_shared_gate")
        self.shared_self_1 = self._self_gate(s, "level_0_shared_self_gate")
        self.shared_2 = self._bank(s, "level_1_shared_experts")
        self.group_2 = [self._bank(ge, f"level_1_group_{g}_experts") for g in range(num_groups)]
        self.task_banks = [self._bank(te, f"level_1_task_{k}_experts")
                           for k in range(self.num_tasks)]
        self.task_gates = [Gate(te + ge + s, name=f"level_1_task_{k}_gate")
                           for k in range(self.num_tasks)]
        self.task_self_gates = [self._self_gate(te, f"level_1_task_{k}_self_gate")
                                for k in range(self.num_tasks)]

    @staticmethod
    def _self_gate(n: int, name: str) -> keras.layers.Dense:
        return keras.layers.Dense(n, name=name)

    @staticmethod
    def _self_mixture(dense, selector, experts):
        """The self-gate: sigmoid for one own expert, softmax over several."""
        logits = dense(selector)
        weights = ops.sigmoid(logits) if logits.shape[-1] == 1 else ops.softmax(logits, -1)
        return ops.einsum("be,bed->bd", weights, experts), weights

    def build(self, input_shape):
        shape = self.build_bottom(input_shape)
        inner = shape[:-1] + (self.expert_units[-1],)
        for layer in [self.shared_1, *self.group_1, *self.group_gates_1, *self.group_self_1,
                      self.shared_gate_1, self.shared_self_1]:
            layer.build(shape)
        for layer in [self.shared_2, *self.group_2, *self.task_banks, *self.task_gates,
                      *self.task_self_gates]:
            layer.build(inner)

    # ------------------------------------------------------------------------------ forward
    def _trunk(self, x, gates: dict, training=None) -> list:
        x = self.apply_bottom(x, training)
        shared = self.shared_1(x, training=training)
        groups = [bank(x, training=training) for bank in self.group_1]
        metas = []
        for g, experts in enumerate(groups):
            mixture, weights = self.group_gates_1[g](x, ops.concatenate([experts, shared], 1))
            own, self_weights = self._self_mixture(self.group_self_1[g], x, experts)
            metas.append(mixture + own)
            gates[f"level_0/group_{g}"] = weights
            gates[f"level_0/self/group_{g}"] = self_weights
        mixture, weights = self.shared_gate_1(x, ops.concatenate([*groups, shared], 1))
        own, self_weights = self._self_mixture(self.shared_self_1, x, shared)
        meta_shared = mixture + own
        gates["level_0/shared"] = weights
        gates["level_0/self/shared"] = self_weights
        shared_2 = self.shared_2(meta_shared, training=training)
        groups_2 = [bank(m, training=training) for bank, m in zip(self.group_2, metas,
                                                                   strict=True)]
        return [shared_2, *groups_2, *metas]

    def trunk(self, x, training=None):
        return self._trunk(x, {}, training)

    def _heads(self, cut, training, factored):
        num_groups = len(self._groups)
        shared = cut[0]
        outputs, gates, readouts = [], {}, []
        te, ge = self.task_experts, self.group_experts
        for k in range(self.num_tasks):
            g = self.group_of[k]
            group, meta = cut[1 + g], cut[1 + num_groups + g]
            own = self.task_banks[k](meta, training=training)
            weights = self.task_gates[k].expert_weights(meta)
            w_own, w_group, w_shared = weights[:, :te], weights[:, te:te + ge], weights[:, te + ge:]
            if factored:  # the terms read stop-gradient copies (Backbone.factored_heads)
                group, shared_read = ops.stop_gradient(group), ops.stop_gradient(shared)
            else:
                shared_read = shared
            group_term = ops.einsum("be,bed->bd", w_group, group)
            shared_term = ops.einsum("be,bed->bd", w_shared, shared_read)
            self_term, self_weights = self._self_mixture(self.task_self_gates[k], meta, own)
            outputs.append(ops.einsum("be,bed->bd", w_own, own) + group_term + shared_term
                           + self_term)
            gates[f"level_1/task_{k}"] = weights
            gates[f"level_1/self/task_{k}"] = self_weights
            readouts.append([GatedReadout(0, w_shared, shared_term),
                             GatedReadout(1 + g, w_group, group_term)])
        return outputs, gates, readouts

    def heads(self, cut, training=None):
        outputs, gates, _ = self._heads(cut, training, factored=False)
        return outputs, gates

    def factored_heads(self, cut, training=None):
        return self._heads(cut, training, factored=True)

    def gate_weights(self, x):
        gates = {}
        cut = self._trunk(x, gates, training=False)
        gates.update(self.heads(cut, training=False)[1])
        return gates

    def head_layers(self):
        return [[self.task_banks[k], self.task_gates[k], self.task_self_gates[k]]
                for k in range(self.num_tasks)]

    def get_config(self):
        config = super().get_config()
        config.update(task_groups=self.task_groups, shared_experts=self.shared_experts,
                      group_experts=self.group_experts, task_experts=self.task_experts,
                      expert_units=self.expert_units, feature_gate_rank=self.feature_gate_rank,
                      normalization=self.normalization, activation=self.activation)
        return config
