"""`MultiTaskModel`: features → backbone → one tower per task, trained through a balancer.

The Keras surface of the package. A training step is the recipe
extract (`keras_mtl.gradients`) → balance (`keras_mtl.balancers`) → chain → guard → apply →
commit the balancer's state → metrics; the losses are `models.losses`, the guard `models.guard`.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_mtl import balancers as balancers_lib
from keras_mtl import data as data_lib
from keras_mtl.balancers.base import BalanceContext, Balancer
from keras_mtl.features import FeatureEncoder
from keras_mtl.features.spec import FeatureSpec, as_feature_spec
from keras_mtl.gradients import TaskGradients
from keras_mtl.gradients.distribution import global_sum, loss_scale, replica_context
from keras_mtl.gradients.extraction import Recording, TapedPass, record
from keras_mtl.gradients.partition import VariablePartition, partition_variables
from keras_mtl.layers.backbone import Backbone
from keras_mtl.layers.custom import CustomBackbone
from keras_mtl.layers.mlp import MLP
from keras_mtl.layers.task_graph import TaskGraph
from keras_mtl.models.guard import StepCounters, TrainingGuard, apply_if, step_flags
from keras_mtl.models.losses import TaskLosses, TaskLossFunction
from keras_mtl.models.progress import TaskProgbarLogger
from keras_mtl.models.reporting import StepMetrics
from keras_mtl.models.step import StepGradients, balanced_gradients
from keras_mtl.tasks import Task, validate_tasks

_not_converted = tf.autograph.experimental.do_not_convert


class Forward(NamedTuple):
    """One forward pass: per-task logits, the backbone's cut tensors that shared parameters reach
    (`cut`; see `MultiTaskModel.balanced_cut`), what the heads read of them (`leaves`:
    stop-gradient copies when detached), when asked for, each task's gated readouts of them, the
    backbone's layer losses (`auxiliary`: their sum, None when it has none) and, per task, the
    ESCM²-DR imputation head's predicted CVR error (`imputations`: None for other tasks; None
    altogether when the model has no DR task or they were not asked for)."""

    logits: list
    cut: list
    leaves: list
    readouts: list | None = None
    auxiliary: tf.Tensor | None = None
    imputations: list | None = None


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskModel(keras.Model):
    """A multi-task ranking model: `FeatureEncoder` → `Backbone` → per-task towers.

    Args:
        features: a `FeatureSpec` (or list of features) of the raw inputs.
        tasks: the `Task`s, in output order.
        backbone: a `keras_mtl.layers` backbone (`SharedBottom`, `MMoE`, `OMoE`, `CGC`, `PLE`, `HoME`,
            `CustomBackbone`), or any Keras layer/model, used as the shared trunk.
        tower_units: hidden widths of each task's tower (a final 1-unit layer is added).
        tower_activation: activation of the tower's hidden layers.
        task_graph: None, or cross-task structure among the heads (`keras_mtl.layers.AITM`,
            `keras_mtl.layers.DBMTL`) between the towers and the logit layers; its layers are
            head parameters (see `keras_mtl.layers.task_graph`). Needs `tower_units`.
        balancer: a name, `Balancer` or config; `None` is `"ew"`. `compile(balancer=...)` and
            `fit(..., balancer=...)` replace it.
        dense_embedding_gradients: only for parameter-level balancers. False (default): embedding
            tables are left out of the balanced per-task gradient matrix (densifying them costs
            vocabulary × dim per task) and are updated with `Σ_k w_k ∇L_k`, using the balancer's
            task weights (ones for projection methods). True: they are densified and balanced like
            every other shared parameter.

    Training (`train_step`) is the recipe extract → balance → chain → guard → apply → commit
    state → metrics. `keras_mtl.gradients` extracts what the balancer's level needs from one
    forward pass on a tape (`"losses"`: the K losses; `"representation"`: task gradients at the
    backbone's cut, factored where a gate reads it, chained through the trunk in **one** backward
    pass; `"parameters"`: task gradients w.r.t. the shared parameters, one vector-Jacobian product
    per task), the balancer reduces them (`Balancer.reduce`), and the extraction chains the result
    back to one gradient per variable; heads get `∇ Σ_k w_k L_k` with the task weights. One
    `optimizer.apply` per step; a non-finite loss, gradient or new balancer state skips the step
    (weights, optimizer and balancer state untouched) and counts it under its reason
    (`models.guard`); FAMO's post-step state update is refused the same way. An epoch whose every
    step is skipped logs NaN and makes `fit` raise a RuntimeError; binary labels other than 0/1
    raise a ValueError naming the task at the epoch's (evaluation's) end.

    The same information is public: `forward`, `task_losses`, `task_gradients` (what a balancer
    gets), `compute_gradients` (what `train_step` applies) and `partition` (shared vs heads).

    Under a `tf.distribute` strategy with several replicas the balancer sees the global batch:
    losses are global means (counts all-reduced), representation-level task gradients are
    all-gathered, parameter-level ones all-reduced, so N replicas train like one device. Under
    `mixed_float16` the losses are scaled for the backward passes and the balancer gets the
    task gradients unscaled, in float32.

    Logs: see `models.reporting.StepMetrics`.
    """

    def __init__(
        self,
        features: FeatureSpec | Sequence | dict,
        tasks: Sequence[Task | dict],
        backbone: Backbone | dict,
        tower_units: Sequence[int] = (32,),
        tower_activation: str = "relu",
        balancer: str | Balancer | dict | None = None,
        dense_embedding_gradients: bool = False,
        task_graph: TaskGraph | dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.spec = as_feature_spec(features)
        self.tasks = validate_tasks(tasks)
        self.task_names = [t.name for t in self.tasks]
        self.spec.check_not_labels(self.task_names)  # a feature named like a task is its label
        self.tower_units = [int(u) for u in tower_units]
        self.tower_activation = tower_activation
        self.dense_embedding_gradients = bool(dense_embedding_gradients)

        self.encoder = FeatureEncoder(self.spec, name="features")
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if isinstance(backbone, keras.layers.Layer) and not isinstance(backbone, Backbone):
            backbone = CustomBackbone(backbone)  # your own trunk: its outputs are the cut
        if not isinstance(backbone, Backbone):
            raise TypeError(
                f"backbone must be a keras_mtl.layers.Backbone (SharedBottom, MMoE, CGC, PLE, "
                f"CustomBackbone) or a Keras layer to use as the trunk; got "
                f"{type(backbone).__name__}."
            )
        backbone.set_feature_layout(self.spec.encoded_layout())
        if backbone.num_tasks is None:
            backbone.set_num_tasks(len(self.tasks))
        elif backbone.num_tasks != len(self.tasks):
            raise ValueError(
                f"The backbone was built for {backbone.num_tasks} tasks; the model has "
                f"{len(self.tasks)}: {self.task_names}."
            )
        self.backbone = backbone
        # STEM-like backbones read task-specific embeddings beside the shared ones: one more
        # encoder (its own tables, the same features) per task, after the shared one.
        self.task_encoders = [FeatureEncoder(self.spec, name=f"{t.name}_features")
                              for t in self.tasks] if backbone.task_embeddings else []
        self.towers = [
            MLP(self.tower_units, tower_activation, name=f"{t.name}_tower") for t in self.tasks
        ]
        self.logit_layers = [keras.layers.Dense(t.num_outputs, name=f"{t.name}_logit")
                             for t in self.tasks]
        # ESCM²-DR: an imputation head per DR task, on the same input as its tower.
        self._imputed = [k for k, t in enumerate(self.tasks) if t.counterfactual == "dr"]
        self.imputation_towers = [
            MLP(self.tower_units, tower_activation, name=f"{self.tasks[k].name}_imputation_tower")
            for k in self._imputed]
        self.imputation_logits = [keras.layers.Dense(1, name=f"{self.tasks[k].name}_imputation")
                                  for k in self._imputed]
        if isinstance(task_graph, dict):
            task_graph = keras.saving.deserialize_keras_object(task_graph)
        if task_graph is not None:
            if not isinstance(task_graph, TaskGraph):
                raise TypeError(f"task_graph must be a keras_mtl.layers.TaskGraph (AITM, DBMTL); "
                                f"got {type(task_graph).__name__}.")
            if not self.tower_units:
                raise ValueError("A task graph reads the towers' outputs: give tower_units.")
            task_graph.bind(self.tasks, self.tower_units[-1])
        self.task_graph = task_graph
        self.task_loss_function = TaskLossFunction(
            self.tasks, row_terms=None if task_graph is None else task_graph.row_terms)

        # Created here: Keras locks a model's state once it is built.
        self.step_counters = StepCounters(len(self.tasks))  # skips, label checks: TrainingGuard
        self.step_metrics = StepMetrics(self.tasks, self.step_counters)
        # Epochs trained so far (the current epoch's index during one): epoch-based balancers read
        # their clock from it inside the step. Advanced by `TrainingGuard`; saved with the model.
        self.epoch = keras.Variable(0, dtype="int64", trainable=False, name="epoch")
        self._balancer = None
        self.build()
        # After build: a balancer sizes its state by the model's layout (tasks, tensors).
        self.set_balancer(balancer)

    # ------------------------------------------------------------------------------ building
    def build(self, input_shape=None):
        if self.built:
            return
        for encoder in (self.encoder, *self.task_encoders):
            if not encoder.built:
                encoder.build()
        if not self.backbone.built:  # a deserialised backbone arrives built (its build_config)
            width = self.encoder.output_dim * (1 + len(self.task_encoders))
            self.backbone.build((None, width))
        self.forward(self._example_features())  # creates every variable
        self.balanced_cut()

    def balanced_cut(self) -> tuple[int, ...]:
        """The indices of the backbone's cut tensors that a shared trainable variable reaches:
        what extraction and balancers see of the cut (`forward`'s `cut`).

        A cut tensor that no shared parameter produces — MMoE's gate input when the encoder has
        no trainable variable (numeric features only) — carries task gradients that update
        nothing. Balancers would still see them: Gramians and norms at the cut would weigh tasks
        by their gradients w.r.t. the raw input, which is not the representation-level problem
        (Sener & Koltun's bound holds for the tensors the shared parameters produce), and cost a
        `[B, d]` block per task. Found on a recorded pass over example features (a path is a
        path whatever the batch), again whenever the shared trainable variables change (an
        encoder frozen or unfrozen); all of the cut when no tensor is reached (a model with no
        shared parameter). Eagerly at build and compile (about 20 ms); first asked inside a
        step's trace, the pass is traced on its own and never run."""
        shared = list(self.partition.shared)
        key = tuple(id(v) for v in shared)
        cached = getattr(self, "_reached_cut", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        found = []

        def probe():  # whether a gradient exists is known once the pass is recorded
            with tf.GradientTape(persistent=True) as tape:
                cut = self.backbone.trunk(self.encode(self._example_features()), training=False)
            found.append(tuple(s for s, tensor in enumerate(cut) if shared and any(
                g is not None for g in tape.gradient(tensor, shared))) or tuple(range(len(cut))))
            return tf.constant(0)

        if not tf.executing_eagerly():  # first asked inside a step's trace: its own trace,
            tf.function(probe, autograph=False).get_concrete_function()  # adding nothing to it
        elif tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context():
            tf.distribute.get_strategy().run(probe)  # distributed variables are read per replica
        else:  # at build and compile: run it
            probe()
        self._reached_cut = (key, found[0])
        return found[0]

    def build_from_config(self, config):
        self.build()

    def _example_features(self, batch: int = 2) -> dict:
        return self.spec.example_inputs(batch)

    @property
    def partition(self) -> VariablePartition:
        """The trainable variables by role: shared (trunk, embedding tables) and heads."""
        head_layers = [layer for layers in self.backbone.head_layers() for layer in layers]
        head_layers += list(self.towers) + list(self.logit_layers)
        head_layers += list(self.imputation_towers) + list(self.imputation_logits)
        if self.task_graph is not None:  # transfers / relations: task-specific, cross-task
            head_layers.append(self.task_graph)
        return partition_variables(
            self.trainable_variables,
            shared=[v for encoder in self.encoders for v in encoder.trainable_variables]
            + self.backbone.trainable_variables,
            heads=[v for layer in head_layers for v in layer.trainable_variables],
            tables=[t for encoder in self.encoders for t in encoder.embedding_tables],
            dense_tables=self.dense_embedding_gradients)

    @property
    def encoders(self) -> list:
        """The shared feature encoder, then the task-specific ones (STEM) if any."""
        return [self.encoder, *self.task_encoders]

    def encode(self, inputs):
        """The backbone's input: the encoded features, followed by each task's own encoding when
        the backbone reads task-specific embeddings (`Backbone.task_embeddings`)."""
        if not self.task_encoders:
            return self.encoder(inputs)
        return tf.concat([encoder(inputs) for encoder in self.encoders], axis=-1)

    @property
    def shared_variables(self) -> list:
        return list(self.partition.shared)

    @property
    def head_variables(self) -> list:
        return list(self.partition.heads)

    # ------------------------------------------------------------------------------ balancer
    @property
    def balancer(self) -> Balancer:
        return self._balancer

    def _gradient_layout(self, level: str) -> tuple[int | None, int | None]:
        """(tensors, columns) of the task-gradient matrix at `level`, as a balancer is built for."""
        if level == "representation":
            return len(self.balanced_cut()), None
        if level == "parameters":
            balanced = self.partition.balanced
            return len(balanced), sum(int(np.prod(v.shape)) for v in balanced)
        return None, None

    def set_balancer(self, balancer: str | Balancer | dict | None, **hparams: Any) -> Balancer:
        """Installs a balancer (a name with hyper-parameters, an instance or a config)."""
        balancer = balancers_lib.get(balancer, **hparams)
        if balancer is self._balancer:
            return balancer
        segments, columns = self._gradient_layout(balancer.level)
        if not balancer.built:
            if balancer.level == "parameters" and hasattr(balancer, "bind_segments"):
                balanced = self.partition.balanced
                balancer.bind_segments([v.path for v in balanced],
                                       [int(np.prod(v.shape)) for v in balanced])
            balancer.build(len(self.tasks), self.task_names, segments, columns)
        elif (balancer.num_tasks != len(self.tasks) or balancer.num_segments != (segments or 1)
              or getattr(balancer, "num_columns", None) not in (None, columns)):
            raise ValueError(
                f"Balancer {balancer.name!r} was built for {balancer.num_tasks} tasks and "
                f"{balancer.num_segments} gradient tensors; this model has {len(self.tasks)} tasks "
                f"and {segments or 1}. Pass a fresh balancer (or its name)."
            )
        # Keras locks a built model's state; a balancer swap is a deliberate, whole replacement of
        # one sub-layer (state and all), so the lock is lifted for exactly that.
        was_locked = self._tracker.locked
        self._tracker.unlock()
        try:
            if self._balancer is not None:
                self._tracker.untrack(self._balancer)
            self._balancer = balancer
        finally:
            if was_locked:
                self._tracker.lock()
        self.train_function = None  # the step is traced for one balancer: retrace
        return balancer

    # ------------------------------------------------------------------------------ forward
    def forward(self, inputs, training=False, detach_cut=False, factored=False,
                watch=None, imputations=True) -> Forward:
        """Logits and the cut. `detach_cut`: the heads read stop-gradient copies of the cut, handed
        to `watch` (a tape's `watch`) before any head reads them; `factored`: also each task's
        gated readouts (`Backbone.factored_heads`); `imputations`: also the ESCM²-DR imputation
        heads' outputs (training needs them, serving does not).

        `auxiliary`: the sum of the backbone's layer losses of this pass (`add_loss`, e.g. the
        DSelect-k regulariser; weight regularisers of its layers). They are not task losses: no
        balancer sees them; training adds their gradient once, with weight 1, to whatever they
        depend on (`keras_mtl.gradients.extract`). A DSelect-k gate's regulariser depends on that
        gate's parameters only, so a task's gate is trained on its task's balanced gradient plus
        its own regulariser, and no shared parameter receives any of it."""
        x = self.encode(inputs)
        cut = self.backbone.trunk(x, training=training)
        leaves = [tf.stop_gradient(c) for c in cut] if detach_cut else cut
        # What extraction sees of the cut: the tensors a shared parameter reaches (all of them
        # while `build` runs its first pass, which creates the variables).
        kept = self.balanced_cut() if self.built else tuple(range(len(cut)))
        if detach_cut and watch is not None:
            watch([leaves[s] for s in kept])
        readouts = None
        if factored:
            task_repr, _, readouts = self.backbone.factored_heads(leaves, training=training)
            position = {s: i for i, s in enumerate(kept)}
            readouts = [[r._replace(cut_index=position[r.cut_index]) for r in task
                         if r.cut_index in position] for task in readouts]
        else:
            task_repr, _ = self.backbone.heads(leaves, training=training)
        hidden, _ = self._task_heads(task_repr, training)
        logits = [  # [batch], or [batch, outputs] for a kind with several (multiclass, ZILN)
            _squeezed(tf.cast(out(h), tf.float32))
            for out, h in zip(self.logit_layers, hidden, strict=True)
        ]
        imputed = None
        if imputations and self._imputed:
            imputed = [None] * len(self.tasks)
            for k, tower, out in zip(self._imputed, self.imputation_towers,
                                     self.imputation_logits, strict=True):
                # softplus: an imputed error is >= 0 (`models.losses.counterfactual_risk`)
                imputed[k] = tf.nn.softplus(
                    _squeezed(tf.cast(out(tower(task_repr[k], training=training)), tf.float32)))
        # Every layer of the backbone was called in this pass, and a layer clears its losses
        # when called, so these are this pass's.
        losses = self.backbone.losses
        auxiliary = tf.add_n([tf.cast(loss, tf.float32) for loss in losses]) if losses else None
        return Forward(logits, [cut[s] for s in kept], [leaves[s] for s in kept], readouts,
                       auxiliary, imputed)

    def _task_heads(self, task_repr, training) -> tuple[list, dict]:
        """Towers, then the task graph: what each logit layer reads, and the graph's weights."""
        hidden = [tower(r, training=training)
                  for tower, r in zip(self.towers, task_repr, strict=True)]
        if self.task_graph is None:
            return hidden, {}
        return self.task_graph.apply(hidden, training=training)

    @property
    def inference_layers(self) -> list:
        """The layers a prediction runs through (what an export tracks)."""
        layers = [*self.encoders, self.backbone, *self.towers, *self.logit_layers]
        return layers + ([self.task_graph] if self.task_graph is not None else [])

    def task_terms(self, y, forward: Forward, sample_weight=None, features=None) -> TaskLosses:
        """The task losses of a forward pass (`TaskLossFunction` with its imputations)."""
        return self.task_loss_function(y, forward.logits, sample_weight, features=features,
                                       imputations=forward.imputations)

    def call(self, inputs, training=False):
        logits = self.forward(inputs, training=training, imputations=False).logits
        outputs = {t.name: t.predict(z) for t, z in zip(self.tasks, logits, strict=True)}
        for task in self.tasks:
            if task.esmm_parent is not None:  # pCTCVR = pCTR · pCVR
                outputs[f"{task.name}_ctcvr"] = outputs[task.esmm_parent] * outputs[task.name]
        return outputs

    def gate_weights(self, inputs) -> dict:
        """Every gate's weights for the rows of `inputs`, keyed with task names; with an AITM task
        graph also each step's attention weights (`ait_<task>`, `[batch, 2]`: own tower,
        transferred information)."""
        x = self.encode(inputs)
        gates = self.backbone.gate_weights(x)
        if self.task_graph is not None:
            task_repr, _ = self.backbone.heads(self.backbone.trunk(x, training=False),
                                               training=False)
            gates = {**gates, **self._task_heads(task_repr, False)[1]}
        renamed = {}
        for key, value in gates.items():
            for k, name in enumerate(self.task_names):
                key = key.replace(f"task_{k}", name) if key.endswith(f"task_{k}") else key
            renamed[key] = value
        return renamed

    # ------------------------------------------------------------------------------ task information
    def task_losses(self, x, y, sample_weight=None, training=False) -> TaskLosses:
        """The batch's per-task losses (see `TaskLosses`), no step taken."""
        return self.task_terms(y, self.forward(x, training=training), sample_weight,
                                       features=x)

    def task_gradients(self, x, y, sample_weight=None, level: str | None = None,
                       training=False) -> TaskGradients:
        """The batch's task gradients at `level` (default: the balancer's), as a balancer gets
        them (`TaskGradients`; `.as_matrix()` gives `J`), no step taken."""
        level = self._balancer.level if level is None else level
        return self._record(level, x, y, sample_weight, training).extraction().task_gradients

    def _record(self, level, x, y, sample_weight, training, hessian_term=False) -> Recording:
        """`keras_mtl.gradients.record`: this model's forward pass and task losses on a tape."""
        def run(detach_cut: bool, factored: bool, watch=None) -> TapedPass:
            forward = self.forward(x, training=training, detach_cut=detach_cut, factored=factored,
                                   watch=watch)
            terms = self.task_terms(y, forward, sample_weight, features=x)
            return TapedPass(terms.weighted, forward.cut, forward.leaves, forward.readouts,
                             (terms, forward.logits), forward.auxiliary)

        return record(level, run, self.partition, loss_scale(getattr(self, "optimizer", None)),
                      hessian_term)

    # ------------------------------------------------------------------------------ gradients
    def compute_gradients(self, x, y, sample_weight=None, training=True) -> StepGradients:
        """One step's gradients, exactly as `train_step` applies them (`StepGradients`)."""
        balancer = self._balancer
        step = self.optimizer.iterations if getattr(self, "optimizer", None) is not None else 0
        context = BalanceContext(step=tf.cast(step, tf.int64), epoch=self.epoch.value)
        recorder = functools.partial(self._record, x=x, y=y, sample_weight=sample_weight,
                                     training=training)
        return balanced_gradients(balancer, recorder, self.partition, context)

    # ------------------------------------------------------------------------------ steps
    # The steps are written for graph mode (explicit `tf.cond`/`tf.while_loop` where control
    # depends on tensors), so AutoGraph need not rewrite them: converting every function the step
    # calls took half of its tracing (MMoE, K = 32, timed by hand: 11.0 s traced with
    # conversion, 6.1 s without), time a user waits for the first step of every `fit`,
    # `evaluate` and `predict`.
    @_not_converted
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._check_compilable(x)
        self.step_counters.count_labels(*self.task_loss_function.label_errors(y))
        step = self.compute_gradients(x, y, sample_weight)  # extract → balance → chain
        replica, num_replicas = replica_context()
        grads, variables = zip(*[(g, v) for g, v in zip(step.grads, step.variables, strict=True)
                                 if g is not None], strict=True)
        updates = list(step.result.updates)
        flags = step_flags(step.losses, grads, [value for _, value in updates], replica)  # guard
        loss_scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        apply_if(self.optimizer, flags.apply_update(loss_scaled), list(grads), list(variables),
                 replica, select=bool(self.jit_compile) and not loss_scaled)
        post_updates, post_finite = self._post_step_updates(x, y, sample_weight, step.losses)
        written = flags.finite & post_finite
        for variable, value in updates + post_updates:  # the balancer's state, on finite steps
            variable.assign(tf.where(written, tf.cast(value, variable.dtype), variable))
        self.step_counters.count_step(written, flags.reasons(post_finite), 1.0 / num_replicas)
        self.step_metrics.update(x, step.losses, step.terms, step.logits, flags.finite,
                                 balance_weights=step.result.weights_for_shared)
        return _for_keras_reduction(self.step_metrics.train_logs())

    def _post_step_updates(self, x, y, sample_weight, losses_before) -> tuple[list, tf.Tensor]:
        """FAMO's state update from the updated model's losses on the same batch (the update has
        been applied by now; what can still be refused is the state write)."""
        if not self._balancer.needs_post_step_losses:
            return [], tf.constant(True)
        after = global_sum(self.task_losses(x, y, sample_weight, training=True).stacked)
        weigh = self.task_loss_function.weight
        post = list(self._balancer.post_step_updates(weigh(losses_before), weigh(after)))
        finite = step_flags(after, [], [value for _, value in post], replica_context()[0])
        return post, finite.losses & finite.state

    @_not_converted
    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._check_compilable(x)
        self.step_counters.count_labels(*self.task_loss_function.label_errors(y))
        forward = self.forward(x, training=False)
        terms = self.task_terms(y, forward, sample_weight, features=x)
        self.step_metrics.update(x, global_sum(terms.stacked), terms, forward.logits,
                                 tf.constant(True))
        return _for_keras_reduction(self.step_metrics.logs())

    @_not_converted
    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        self._check_compilable(x)
        return self(x, training=False)

    def _check_compilable(self, x) -> None:
        """A raw categorical value in an XLA-compiled step cannot be looked up: say which, and how
        to avoid it (traced once, so this costs nothing per step)."""
        raw = self.encoder.lookup_stage.pending(x) if isinstance(x, dict) else []
        if raw and self.jit_compile:
            raise ValueError(
                f"Features {raw} reach the XLA-compiled step as raw values, and their lookup tables "
                "cannot be compiled. Pass a tf.data.Dataset, a dict of arrays or a DataFrame "
                "(fit/evaluate/predict look them up in the input pipeline), map "
                "`model.encoder.lookup_stage` over your dataset, or compile(jit_compile=False).")

    def get_metrics_result(self):
        """The logged values (`loss`, task losses and metrics, skip counters, balancer weights),
        NaN where undefined, read from the metrics' state. Keras uses these for the epoch's
        logs; outside the step they are read across replicas, so under a distribution strategy
        they are global (sums), where a step's returned logs hold one replica's values."""
        return self.step_metrics.train_logs()

    def _get_metrics_result_or_logs(self, logs):
        # Keras (3.x) takes `get_metrics_result()` for the epoch's logs only when its keys equal
        # the step's; evaluate's logs are a subset (no skip counters, no weights): take those.
        results = self.get_metrics_result()
        if isinstance(logs, dict) and logs and set(logs) <= set(results):
            return {key: results[key] for key in logs}
        return logs

    @property
    def metrics(self):
        return self.step_metrics.metrics

    @property
    def metrics_names(self) -> list[str]:
        """The names of the values `evaluate()` (and `test_on_batch`) return as a list, in that
        order, as Keras documents it; training logs add the skip counters and balancer weights."""
        logs = self.step_metrics.logs()
        names = [m.name for m in self.metrics if m.name in logs]
        return names + sorted(k for k in logs if k not in names)

    # ------------------------------------------------------------------------------ Keras API
    def compile(self, optimizer="adam", balancer=None, **kwargs):
        """`keras.Model.compile` plus `balancer=`. Losses and metrics belong to the `Task`s."""
        for key in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"compile({key}=...) is not used by MultiTaskModel: losses, weights and metrics "
                    "are declared on each keras_mtl.Task."
                )
            kwargs.pop(key, None)
        super().compile(optimizer=optimizer, **kwargs)
        if balancer is not None:
            self.set_balancer(balancer)
        elif self._balancer is not None and self._balancer.built:
            # Layers frozen or unfrozen since the balancer was built change what it balances.
            segments, columns = self._gradient_layout(self._balancer.level)
            if (self._balancer.num_segments != (segments or 1)
                    or getattr(self._balancer, "num_columns", None) not in (None, columns)):
                raise ValueError(
                    f"Balancer {self._balancer.name!r} was built for "
                    f"{self._balancer.num_segments} gradient tensors at the "
                    f"{self._balancer.level} level; after the change of trainable layers this "
                    f"model has {segments or 1}. Pass compile(balancer=...) a fresh balancer "
                    f"(or its name).")
        # Build optimizer state now so that skipping a step (tf.cond) never creates variables.
        self.optimizer.build(self.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer builds a model under a strategy from a first batch reduced across
        # replicas, which fails for dict inputs under MultiWorkerMirroredStrategy. This model is
        # built in __init__ and its optimizer in compile(): there is nothing left to build.
        if self.built and getattr(self, "optimizer", None) is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**{k: v for k, v in config.items() if v is not None})

    def _pipeline(self, args: tuple, kwargs: dict, labels: bool = True) -> tuple[tuple, dict]:
        """fit/evaluate/predict's data with lookups moved into the input pipeline and DataFrames
        converted (`keras_mtl.data.plain_inputs`; `labels`: a DataFrame's task columns are `y`)."""
        args, kwargs = list(args), dict(kwargs)
        stage = self.encoder.lookup_stage
        x = args[0] if args else kwargs.get("x")
        y = args[1] if len(args) > 1 else kwargs.get("y")
        x, y = data_lib.plain_inputs(x, y, stage, self.tasks if labels else ())
        for i, (key, value) in enumerate((("x", x), ("y", y))):
            if len(args) > i:
                args[i] = value
            elif value is not None:
                kwargs[key] = value
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = data_lib.validation_inputs(kwargs["validation_data"],
                                                                   stage, self.tasks)
        return tuple(args), kwargs

    def train_on_batch(self, x, y=None, *args, **kwargs):
        x, y = data_lib.plain_inputs(x, y, self.encoder.lookup_stage, self.tasks)
        return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        x, y = data_lib.plain_inputs(x, y, self.encoder.lookup_stage, self.tasks)
        return super().test_on_batch(x, y, *args, **kwargs)

    def predict_on_batch(self, x):
        x, _ = data_lib.plain_inputs(x, None, self.encoder.lookup_stage, ())
        return super().predict_on_batch(x)

    def predict(self, *args, **kwargs):
        """`keras.Model.predict`; raw categorical values are looked up in the input pipeline, and
        a DataFrame gives the spec's feature columns (others, labels included, are ignored)."""
        args, kwargs = self._pipeline(args, kwargs, labels=False)
        return super().predict(*args, **kwargs)

    def fit(self, *args, balancer=None, callbacks=None, **kwargs):
        """`keras.Model.fit` plus `balancer=` (a name, instance or config) for this and later runs.

        Inputs as Keras takes them, plus a DataFrame (features, and labels when `y` is not
        given); raw categorical values are looked up in the input pipeline
        (`keras_mtl.data.with_lookups`), so the compiled step has no lookup table.

        At `verbose=1`/`2` the console shows `keras_mtl.callbacks.TaskProgbarLogger`: each task's
        headline metric on the bar, skip counters only when non-zero, and a per-task table (train
        and validation side by side) after each epoch. Pass `keras.callbacks.ProgbarLogger()` in
        `callbacks` for Keras' plain lines instead."""
        if kwargs.get("class_weight") is not None:
            # Keras' class_weight is one dict for a single output; its multi-task form is a row
            # weight per task, which sample_weight already is.
            raise ValueError(
                "class_weight is Keras' single-output form and does not apply to a multi-task "
                "model. Weight rows per task instead: sample_weight={task: row weights} (e.g. "
                "np.where(labels['click'] == 1, 5.0, 1.0) for the click task; tasks left out "
                "weigh 1), or one array for every task, or from_dataframe(..., sample_weight=col).")
        if balancer is not None:
            self.set_balancer(balancer)
        args, kwargs = self._pipeline(args, kwargs)
        # First, so that its epoch-end work (epoch counter, NaN logs) precedes every other
        # callback's (BackupAndRestore saves the advanced counter, History records the NaNs).
        callbacks = _with_progress_bar([TrainingGuard(), *(callbacks or [])],
                                       args[4] if len(args) > 4 else kwargs.get("verbose", "auto"))
        data = args[0] if args else kwargs.get("x")
        if isinstance(data, tf.data.Dataset):
            # Keras warns that shuffle=True (its default) is ignored for datasets: it is.
            kwargs.setdefault("shuffle", False)
        with _streams_end_quietly(data, kwargs.get("validation_data"),
                                  steps=kwargs.get("steps_per_epoch")):
            return super().fit(*args, callbacks=callbacks, **kwargs)

    def evaluate(self, *args, callbacks=None, **kwargs):
        """`keras.Model.evaluate`, checking labels at the end (see `TrainingGuard`); at
        `verbose=1` a compact bar and a per-task table (`keras_mtl.callbacks.TaskProgbarLogger`)."""
        if not isinstance(callbacks, keras.callbacks.CallbackList):  # fit's validation has it
            callbacks = _with_progress_bar([TrainingGuard(), *(callbacks or [])],
                                           args[3] if len(args) > 3 else kwargs.get("verbose",
                                                                                     "auto"))
        args, kwargs = self._pipeline(args, kwargs)
        with _streams_end_quietly(args[0] if args else kwargs.get("x"), steps=kwargs.get("steps")):
            return super().evaluate(*args, callbacks=callbacks, **kwargs)

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False,
                show_trainable=False, layer_range=None):
        """The layers in data-flow order with their output shapes (batch `None`), the tasks (kind,
        loss, sample space, weight, metrics, served output), the balancer and parameter counts.
        Keras' arguments are accepted; `positions`, `show_trainable` and `layer_range` are
        ignored. `print_fn` gets the whole text (default: `print`)."""
        from keras_mtl.models.summary import summary_text

        text = summary_text(self, expand_nested=expand_nested, line_length=line_length)
        (print_fn or print)(text)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               score=None, **kwargs):
        """Keras' `model.export`, as a SavedModel for TF Serving at `filepath` itself:
        `keras_mtl.serving.write_saved_model` (the signatures `serving_default` and
        `score_with_exponents` over the named raw features, lookup tables included, and the
        input contract). `score`: a `ScoreSpec` (or its config). Only `format="tf_saved_model"`;
        the inputs are the feature spec's, so `input_signature` is not taken. For a versioned
        folder under a TF Serving model base path use `keras_mtl.serving.export`."""
        if format != "tf_saved_model":
            raise ValueError(f"MultiTaskModel exports format='tf_saved_model' only, not {format!r}.")
        if input_signature is not None:
            raise ValueError("input_signature is the feature spec's (one named input per feature); "
                             "MultiTaskModel.export does not take another.")
        from keras_mtl import serving

        path = serving.write_saved_model(self, filepath, score=score, **kwargs)
        if verbose or verbose is None:
            signatures = f"{serving.DEFAULT_SIGNATURE}, {serving.EXPONENTS_SIGNATURE}"
            print(f"Saved artifact at '{path}' (signatures: {signatures}; inputs: "
                  f"{len(self.spec.names)} named features; outputs: {self.task_names} and score).")
        return path

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "features": self.spec.get_config(),
            "tasks": [t.get_config() for t in self.tasks],
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "tower_units": self.tower_units,
            "tower_activation": self.tower_activation,
            "balancer": keras.saving.serialize_keras_object(self._balancer),
            "dense_embedding_gradients": self.dense_embedding_gradients,
            "task_graph": (None if self.task_graph is None
                           else keras.saving.serialize_keras_object(self.task_graph)),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)



@contextlib.contextmanager
def _streams_end_quietly(*datasets, steps=None):
    """A stream of unknown length (`keras_mtl.data.from_files`) ends each epoch when it runs out,
    which Keras 3 reports as "Your input ran out of data; interrupting training": not so here."""
    with warnings.catch_warnings():
        if steps is None and any(isinstance(d, tf.data.Dataset)
                                 and d.cardinality() == tf.data.UNKNOWN_CARDINALITY
                                 for d in datasets):
            warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


def _with_progress_bar(callbacks: list, verbose) -> list:
    """`callbacks` plus `TaskProgbarLogger` where Keras would add its own progress bar (verbose
    not 0, and no `ProgbarLogger` passed: yours wins, e.g. Keras' plain one)."""
    if verbose == 0 or any(isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks):
        return callbacks
    return [*callbacks, TaskProgbarLogger()]


def _squeezed(logits: tf.Tensor) -> tf.Tensor:
    """A one-output head's `[batch, 1]` as `[batch]`; wider heads stay `[batch, outputs]`."""
    return logits[:, 0] if logits.shape[-1] == 1 else logits


def _for_keras_reduction(logs: dict) -> dict:
    """Under MultiWorkerMirroredStrategy Keras reduces each log over the replicas with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars (Keras 3.15): give it
    one-element vectors there, which it reduces back to the same scalars."""
    strategy = tf.distribute.get_strategy()
    if not (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()):
        return logs
    return {key: tf.reshape(value, [1]) for key, value in logs.items()}
