"""Task graphs: cross-task structure among the task heads (AITM, DBMTL).

A task graph sits between the towers and the logit layers of `MultiTaskModel`: it takes every
task's tower output `q_k` and returns the representation each logit layer reads, which may
depend on other tasks' heads. Every variable of a task graph is task-specific — it is a head
parameter, on the heads' side of the backbone's cut — so the cut stays the backbone's shared
representation and every balancer level stays defined.

What changes is the Backbone contract's condition 2 ("every variable of head k influences task
k only"): a transfer or relation layer fed by task j influences every task downstream of j.
Nothing in training relies on condition 2. The extraction differentiates each task's loss with
respect to every head variable and gives the heads `Σ_k w_k ∇_θ L_k`, which is the gradient of
`Σ_k w_k L_k` however the heads depend on one another; and task k's gradient at the cut,
`∂L_k/∂cut`, includes its paths through the heads of the tasks it reads (as ESMM's pCTCVR already
reads the click head). The tests check both against plain autodiff.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from keras_mtl.layers.mlp import MLP


class TaskGraph(keras.layers.Layer):
    """Base class: `bind(tasks, width)` validates the graph against the model's tasks and creates
    (and builds) the layers for towers of output width `width`; `apply(towers)` maps the K tower
    outputs to `(K representations for the logit layers, {name: inspection weights})`;
    `row_terms(logits)` returns `{task index: [batch] term}` added to those tasks' per-row
    losses (none by default)."""

    def bind(self, tasks: Sequence, width: int) -> None:
        raise NotImplementedError

    def apply(self, towers: Sequence, training=None) -> tuple[list, dict]:
        raise NotImplementedError

    def row_terms(self, logits: Sequence) -> dict:
        return {}

    def _check_names(self, tasks: Sequence, names: Sequence[str], argument: str) -> list[str]:
        task_names = [t.name for t in tasks]
        unknown = [n for n in names if n not in task_names]
        if unknown:
            raise ValueError(f"{type(self).__name__} {argument} names {unknown}, which are not "
                             f"tasks of this model (tasks: {task_names}).")
        return task_names


@keras.saving.register_keras_serializable(package="keras_mtl")
class AITM(TaskGraph):
    """AITM: adaptive information transfer along a sequence of conversion steps.

    Xi et al., "Modeling the Sequential Dependence among Audience Multi-step Conversions with
    Multi-task Learning in Targeted Display Advertising", KDD'21 (official code:
    github.com/xidongbo/AITM). For the steps t = 1 … T of `sequence` (impression → click →
    purchase → …), with q_t task t's tower output:

        z_1 = q_1
        p_{t−1} = g_{t−1}(z_{t−1})                                 (transfer, eq. 1)
        ŵ_u = ⟨h_1(u), h_2(u)⟩ / √k,   u ∈ {q_t, p_{t−1}}          (eq. 3)
        w_u = exp(ŵ_u) / Σ_{u'} exp(ŵ_{u'})                        (eq. 4)
        z_t = Σ_u w_u h_3(u)                                       (AIT module, eq. 2)
        ŷ_t = σ(logit_t(z_t))

    and the behavioural expectation calibrator (eq. 6), weighted by α = `calibrator_weight`:

        L_lc = 1/N Σ_x Σ_{t=2}^{T} max(ŷ_t − ŷ_{t−1}, 0).

    The labels are end-to-end (purchase = 1 only on clicked rows with a purchase), every task
    over every impression: ŷ_t is p(steps 1…t | x), so ŷ_t ≤ ŷ_{t−1} is what a calibrated model
    predicts. A task with `sample_space` or `esmm_parent` predicts a conditional probability, for
    which the calibrator is wrong, and is refused in the sequence.

    Choices the paper leaves open, and ours:
    - h_1, h_2, h_3 are k × k linear maps without bias (k: the towers' output width), one set
      shared by every step — the paper does not index them by t, and the official code shares
      them; g_{t−1} is one Dense(k) layer with `transfer_activation` per step (the official code:
      Dense + batch norm + ReLU + dropout; we leave the normalisation and dropout out);
    - the calibrator is **part of task t's loss**: step t's term `α·max(ŷ_t − ŷ_{t−1}, 0)` is
      added to task t's per-row loss (before its missing-label mask and mean), so the balancers
      see it as task t's. It depends on the shared representation through both predictions, so
      it cannot be one of the layer losses added outside the balancer (those reach only the
      variables they depend on after the cut is detached: the representation and parameter
      levels would drop its shared gradient and disagree with the loss level). Its gradient also
      reaches task t − 1's head (through ŷ_{t−1}), as in the paper's joint loss;
    - the calibrator counts the rows where task t has a label (the paper has no missing labels).
    - Tasks outside `sequence` are untouched (z = q).

    `apply` also returns each step's attention weights `w` (`[batch, 2]`: own tower, transferred
    information) under `ait_<task>`; `MultiTaskModel.gate_weights` includes them.
    """

    def __init__(self, sequence: Sequence[str], calibrator_weight: float = 0.6,
                 transfer_activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.sequence = [str(n) for n in sequence]
        if len(self.sequence) < 2 or len(set(self.sequence)) != len(self.sequence):
            raise ValueError(f"AITM needs a sequence of at least two distinct tasks; got "
                             f"{self.sequence}.")
        if not (isinstance(calibrator_weight, int | float) and math.isfinite(calibrator_weight)
                and calibrator_weight >= 0):
            raise ValueError(f"AITM calibrator_weight must be a finite number >= 0; got "
                             f"{calibrator_weight!r}.")
        self.calibrator_weight = float(calibrator_weight)
        self.transfer_activation = transfer_activation
        self._indices: list[int] = []

    def bind(self, tasks, width):
        names = self._check_names(tasks, self.sequence, "sequence")
        for name in self.sequence:
            task = tasks[names.index(name)]
            if task.kind != "binary" or task.ranking_loss is not None:
                raise ValueError(f"AITM step {name!r} must be a binary task with a per-row loss "
                                 f"(kind {task.kind!r}, loss {task.loss!r}).")
            if task.sample_space is not None or task.esmm_parent is not None:
                raise ValueError(
                    f"AITM step {name!r} has sample_space/esmm_parent: AITM trains every step "
                    "over every impression with end-to-end labels (a purchase is 1 only after a "
                    "click, 0 on unclicked rows), and its calibrator compares unconditional "
                    "probabilities. Give the step's label as such and drop the option.")
        self._indices = [names.index(n) for n in self.sequence]
        self.width = int(width)
        self.transfers = [keras.layers.Dense(width, activation=self.transfer_activation,
                                             name=f"transfer_{n}") for n in self.sequence[1:]]
        self.attention = [keras.layers.Dense(width, use_bias=False, name=f"attention_h{i}")
                          for i in (1, 2, 3)]
        for layer in (*self.transfers, *self.attention):
            layer.build((None, width))
        self.built = True

    def apply(self, towers, training=None):
        outputs = list(towers)
        weights = {}
        z = towers[self._indices[0]]
        for transfer, k, name in zip(self.transfers, self._indices[1:], self.sequence[1:],
                                     strict=True):
            z, w = self.transfer_attention(towers[k], transfer(z))
            outputs[k] = z
            weights[f"ait_{name}"] = w
        return outputs, weights

    def transfer_attention(self, q, p):
        """The AIT module (eqs. 2-4): `(z, w)` for the tower output `q` and transferred `p`."""
        u = tf.stack([q, p], axis=1)  # [batch, 2, k]
        h1, h2, h3 = (layer(u) for layer in self.attention)
        scores = tf.reduce_sum(h1 * h2, axis=-1) / math.sqrt(self.width)
        w = tf.nn.softmax(scores, axis=1)
        return tf.reduce_sum(w[:, :, None] * h3, axis=1), w

    def row_terms(self, logits):
        if not self.calibrator_weight:
            return {}
        probabilities = {k: tf.sigmoid(logits[k]) for k in self._indices}
        return {k: self.calibrator_weight * tf.nn.relu(probabilities[k] - probabilities[j])
                for j, k in zip(self._indices, self._indices[1:], strict=False)}

    def get_config(self):
        config = super().get_config()
        config.update(sequence=self.sequence, calibrator_weight=self.calibrator_weight,
                      transfer_activation=self.transfer_activation)
        return config


# Registered under its own name: the DB-MTL balancer (keras_mtl.balancers.db_mtl) is `DBMTL` too,
# and one registered name for two classes would load a saved model's balancer as this layer.
@keras.saving.register_keras_serializable(package="keras_mtl", name="DBMTLTaskGraph")
class DBMTL(TaskGraph):
    """DBMTL: task towers that also read the heads of the tasks they depend on.

    Wang et al., "Deep Bayesian Multi-Target Learning for Recommender Systems", arXiv 1902.09154
    (EasyRec's `dbmtl`). The model factorises the joint along a declared task DAG,

        p(y_1, …, y_K | x) = Π_k p(y_k | x, y_{parents(k)}),

    with the parents' *hidden representations* standing in for their labels: in topological
    order, every task k computes

        r_k = f_k([q_k ; r_{j_1} ; … ; r_{j_m}]),   j_1 … j_m = depends_on[k],
        ŷ_k = logit_k(r_k),

    where q_k is task k's tower output and f_k its relation MLP (`relation_units`,
    `activation`). Gradients flow from a child's loss into its parents' relation MLPs, towers
    and the shared trunk (no stop-gradient), so a parent head also learns what its children need.

    Choices the paper leaves open, and ours (following EasyRec's `dbmtl.py`): every task has a
    relation MLP, roots included; a child reads its parents' relation outputs r_j (not their
    towers' q_j, nor their predictions); the parents are concatenated in the declared order.
    EasyRec's optional bias towers and its MMoE / CMBF / UNITER bottoms are left out: the bottom
    is this model's backbone (any of them). `depends_on` maps a task to the tasks it reads; a
    cycle is refused.
    """

    def __init__(self, depends_on: Mapping[str, Sequence[str]], relation_units: Sequence[int] = (32,),
                 activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.depends_on = {str(k): [str(p) for p in v] for k, v in dict(depends_on).items()}
        self.relation_units = [int(u) for u in relation_units]
        if not self.relation_units:
            raise ValueError("DBMTL needs relation_units (at least one layer).")
        self.activation = activation
        self._order: list[int] = []
        self._parents: list[list[int]] = []

    def bind(self, tasks, width):
        mentioned = list(self.depends_on) + [p for ps in self.depends_on.values() for p in ps]
        names = self._check_names(tasks, mentioned, "depends_on")
        for child, parents in self.depends_on.items():
            if child in parents or len(set(parents)) != len(parents):
                raise ValueError(f"DBMTL: task {child!r} depends on {parents}: no self-loop, no "
                                 "repeated parent.")
        self._parents = [[names.index(p) for p in self.depends_on.get(n, [])] for n in names]
        self._order = _topological_order(names, self._parents)
        out = self.relation_units[-1]
        self.relations = [MLP(self.relation_units, self.activation, name=f"{n}_relation")
                          for n in names]
        for k, mlp in enumerate(self.relations):
            mlp.build((None, width + out * len(self._parents[k])))
        self.built = True

    def apply(self, towers, training=None):
        outputs = [None] * len(towers)
        for k in self._order:
            inputs = [towers[k]] + [outputs[j] for j in self._parents[k]]
            joined = inputs[0] if len(inputs) == 1 else tf.concat(inputs, axis=-1)
            outputs[k] = self.relations[k](joined, training=training)
        return outputs, {}

    def get_config(self):
        config = super().get_config()
        config.update(depends_on=self.depends_on, relation_units=self.relation_units,
                      activation=self.activation)
        return config


def _topological_order(names: Sequence[str], parents: Sequence[Sequence[int]]) -> list[int]:
    """Indices in an order where every task follows its parents (declared order among ties)."""
    order, placed = [], set()
    while len(order) < len(names):
        ready = [k for k in range(len(names))
                 if k not in placed and all(p in placed for p in parents[k])]
        if not ready:
            cycle = [names[k] for k in range(len(names)) if k not in placed]
            raise ValueError(f"DBMTL: the task dependencies among {cycle} form a cycle.")
        order.append(ready[0])
        placed.add(ready[0])
    return order
