"""`MultiTaskModel`: features → backbone → one tower per task, trained through a balancer."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_mtl import balancers as balancers_lib
from keras_mtl.balancers.base import BalanceContext, Balancer, BalanceResult
from keras_mtl.balancers.blocks import OuterProductBlock, block_weighted_sum
from keras_mtl.balancers.cograd import transference_hessian_term
from keras_mtl.balancers.every import EveryK
from keras_mtl.features import FeatureEncoder
from keras_mtl.features.spec import TF_DTYPES, FeatureSpec, as_feature_spec
from keras_mtl.layers.backbone import Backbone
from keras_mtl.layers.mlp import MLP
from keras_mtl.metrics import group_feature_of
from keras_mtl.tasks import Task, validate_tasks

_ZERO = tf.UnconnectedGradients.ZERO


# Why a step was skipped, in the order the step checks (a step is counted under the first).
SKIP_REASONS = ("nonfinite_loss", "nonfinite_gradient", "nonfinite_balancer_state")
_REASON_WORDS = {"nonfinite_loss": "non-finite loss", "nonfinite_gradient": "non-finite gradient",
                 "nonfinite_balancer_state": "non-finite balancer state"}


class _Counts(keras.metrics.Metric):
    """A vector of running totals the model reads back itself (label checks, labelled rows).

    A metric, so Keras resets it at every epoch and evaluation and sums it over replicas; the
    model keeps it out of the logs."""

    def __init__(self, size: int, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        self.size = int(size)
        self.counts = self.add_variable((self.size,), initializer="zeros", name="counts")

    def update_state(self, values):
        self.counts.assign_add(tf.cast(values, self.counts.dtype))

    def result(self):
        return tf.identity(self.counts)


class _TrainingGuard(keras.callbacks.Callback):
    """What `fit`/`evaluate` check outside the compiled step, at epoch (or evaluation) ends only.

    - The model's epoch counter: `max(counter, epoch)` when an epoch begins (so `initial_epoch`
      and `BackupAndRestore` resume it), +1 when it ends having trained (an epoch whose every
      step was skipped leaves it, as a skipped step leaves `optimizer.iterations`). It counts the
      epochs trained so far whatever the calls look like: `fit(epochs=1)` four times advances it
      like `fit(epochs=4)`.
    - Labels outside a task's range, counted in the step (XLA drops `tf.debugging.Assert`):
      a ValueError naming the task; ESMM children labelled 1 under a parent 0: a warning.
    - An epoch whose every step was skipped: its logs become NaN (never `loss 0.0`), training
      stops, and `fit` raises a RuntimeError naming the count and the reasons. The error is
      raised from `on_train_end`, before later callbacks' (a `BackupAndRestore` backup is kept).

    No batch-level hooks: reading a counter per batch would sync the device and turn off Keras'
    asynchronous callback dispatch.
    """

    def __init__(self):
        super().__init__()
        self._in_epoch = False
        self._snapshot = None
        self._error = None

    def on_train_begin(self, logs=None):
        self._error = None

    def on_epoch_begin(self, epoch, logs=None):
        counter = self.model.epoch
        counter.assign(max(int(counter.numpy()), int(epoch)))
        self._in_epoch, self._snapshot = True, None

    def on_test_begin(self, logs=None):
        # Validation inside fit resets every metric: read the training counts before it does.
        if self._in_epoch and self._snapshot is None:
            self._snapshot = self.model._step_report()

    def on_test_end(self, logs=None):
        self.model._check_labels(self.model._step_report(), "evaluation")

    def on_epoch_end(self, epoch, logs=None):
        report = self._snapshot or self.model._step_report()
        self._in_epoch, self._snapshot = False, None
        self.model._check_labels(report, f"epoch {epoch + 1}")
        if not (report["steps"] > 0 and report["skipped"] >= report["steps"]):
            self.model.epoch.assign(int(self.model.epoch.numpy()) + 1)
            return
        # Nothing was trained. The logs dict is shared with the callbacks after this one.
        for key in logs if logs is not None else ():
            if not key.startswith(("val_", "skipped")):
                logs[key] = float("nan")
        self._error = RuntimeError(self.model._all_skipped_message(report, epoch))
        self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._error is not None:
            error, self._error = self._error, None
            raise error


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskModel(keras.Model):
    """A multi-task ranking model: `FeatureEncoder` → `Backbone` → per-task towers.

    Args:
        features: a `FeatureSpec` (or list of features) of the raw inputs.
        tasks: the `Task`s, in output order.
        backbone: a `keras_mtl.layers` backbone (`SharedBottom`, `MMoE`, `CGC`, `PLE`).
        tower_units: hidden widths of each task's tower (a final 1-unit layer is added).
        tower_activation: activation of the tower's hidden layers.
        balancer: a name, `Balancer` or config; `None` is `"ew"`. `compile(balancer=...)` and
            `fit(..., balancer=...)` replace it.
        dense_embedding_gradients: only for parameter-level balancers. False (default): embedding
            tables are left out of the balanced per-task gradient matrix (densifying them costs
            vocabulary × dim per task) and are updated with `Σ_k w_k ∇L_k`, using the balancer's
            task weights (ones for projection methods). True: they are densified and balanced like
            every other shared parameter.

    Training (`train_step`): one forward pass on a tape, per-task losses, then by balancer level:
    - `"losses"`: `Σ_k w_k L_k` back-propagated once.
    - `"representation"`: the heads run on stop-gradient copies of the backbone's cut tensors, so
      `∂L_k/∂cut` costs only the heads; the balancer combines the `[K, D]` matrix, given as
      blocks that stay factored where a gate reads the cut (`Backbone.factored_heads`,
      `keras_mtl.balancers.blocks`), and the result is chained through the trunk in **one**
      backward pass (`output_gradients`).
    - `"parameters"`: per-task gradients w.r.t. the shared parameters, each one vector-Jacobian
      product of `∂L_k/∂cut` through the trunk (chain rule, exact), balanced, then applied.
    Task-specific (head) parameters always get `∇ Σ_k w_k L_k`. One `optimizer.apply` per step; a
    non-finite loss, gradient or new balancer state skips the step (weights, optimizer and balancer
    state untouched) and counts it in `skipped_steps` and under its reason; FAMO's post-step state
    update is refused the same way when it is non-finite. An epoch whose every step is skipped
    logs NaN and makes `fit` raise a RuntimeError. Binary labels other than 0/1 (or missing) are
    counted in the step and raise a ValueError naming the task at the epoch's (evaluation's) end.

    Under a `tf.distribute` strategy with several replicas the balancer sees the global batch:
    losses are global means (counts all-reduced), representation-level task gradients are
    all-gathered, parameter-level ones all-reduced, so N replicas train like one device. Under
    `mixed_float16` the losses are scaled for the backward passes and the balancer gets the
    task gradients unscaled, in float32.

    Logs: `loss` (Σ_k weight_k·L_k as equal weighting would train it, comparable across
    balancers), `<task>_loss` (the task's mean loss over its valid rows) and `<task>_<metric>`,
    NaN for a task without labelled rows; in training also `skipped_steps` and
    `skipped_nonfinite_{loss,gradient,balancer_state}` (totals over the epoch) and
    `<task>_weight` (the balancer's weight, averaged over the finite steps with rows of the task).
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
        if not isinstance(backbone, Backbone):
            raise TypeError(
                f"backbone must be a keras_mtl.layers.Backbone (SharedBottom, MMoE, CGC, PLE); "
                f"got {type(backbone).__name__}."
            )
        if backbone.num_tasks is None:
            backbone.set_num_tasks(len(self.tasks))
        elif backbone.num_tasks != len(self.tasks):
            raise ValueError(
                f"The backbone was built for {backbone.num_tasks} tasks; the model has "
                f"{len(self.tasks)}: {self.task_names}."
            )
        self.backbone = backbone
        self.towers = [
            MLP(self.tower_units, tower_activation, name=f"{t.name}_tower") for t in self.tasks
        ]
        self.logit_layers = [keras.layers.Dense(1, name=f"{t.name}_logit") for t in self.tasks]

        # Trackers and metrics are created here: Keras locks a model's state once it is built.
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{t.name}_loss") for t in self.tasks]
        self.task_metrics = [t.build_metrics() for t in self.tasks]
        # Running totals over the epoch (not means): steps skipped, and why (`SKIP_REASONS`).
        self.skipped_steps = keras.metrics.Sum(name="skipped_steps")
        self.skip_reason_counters = [keras.metrics.Sum(name=f"skipped_{r}") for r in SKIP_REASONS]
        # The balancer's weight of each task (its shared weights, else its task weights), averaged
        # over the epoch's finite steps where the task had rows (a loss-ratio method's weight of a
        # task without rows is ~1/0): `history.history["<task>_weight"]` shows them over training.
        self.balance_weight_trackers = [keras.metrics.Mean(name=f"{t.name}_weight")
                                        for t in self.tasks]
        # Read back by `_TrainingGuard`, never logged: steps run, labels out of range per task,
        # ESMM children labelled 1 under a parent 0, and each task's metric rows (NaN without).
        self.step_counter = keras.metrics.Sum(name="steps")
        self.invalid_label_counts = _Counts(len(self.tasks), name="invalid_labels")
        self.esmm_violation_counts = _Counts(len(self.tasks), name="esmm_violations")
        self.labelled_row_counts = _Counts(len(self.tasks), name="labelled_rows")
        # Epochs trained so far (the current epoch's index during one): epoch-based balancers read
        # their clock from it inside the step. Advanced by `_TrainingGuard`; saved with the model.
        self.epoch = keras.Variable(0, dtype="int64", trainable=False, name="epoch")
        self._balancer = None
        self.build()
        # After build: a balancer sizes its state by the model's layout (tasks, tensors).
        self.set_balancer(balancer)

    # ------------------------------------------------------------------------------ building
    def build(self, input_shape=None):
        if self.built:
            return
        if not self.encoder.built:
            self.encoder.build()
        if not self.backbone.built:  # a deserialised backbone arrives built (its build_config)
            self.backbone.build((None, self.encoder.output_dim))
        _, cut, _ = self._forward(self._example_features(), training=False, detach_cut=False)
        self._num_cut_tensors = len(cut)
        self._partition_variables()

    def build_from_config(self, config):
        self.build()

    def _example_features(self, batch: int = 2) -> dict:
        return {
            f.name: tf.zeros([batch], TF_DTYPES[f.dtype]) if f.dtype != "string"
            else tf.fill([batch], "")
            for f in self.spec
        }

    def _partition_variables(self):
        """Splits trainable variables into shared (trunk, embeddings) and task-specific (heads)."""
        head_layers = [layer for layers in self.backbone.head_layers() for layer in layers]
        head_layers += list(self.towers) + list(self.logit_layers)
        head_ids = {id(v) for layer in head_layers for v in layer.trainable_variables}
        table_ids = {id(v) for v in self.encoder.embedding_tables}
        shared = [v for v in self.encoder.trainable_variables + self.backbone.trainable_variables
                  if id(v) not in head_ids]
        self._head_variables = [v for layer in head_layers for v in layer.trainable_variables]
        self._sparse_shared_variables = [v for v in shared if id(v) in table_ids]
        self._dense_shared_variables = [v for v in shared if id(v) not in table_ids]

    def _balanced_variables(self) -> list:
        """The shared variables whose task gradients form the parameter-level matrix."""
        if self.dense_embedding_gradients:
            return self._dense_shared_variables + self._sparse_shared_variables
        return list(self._dense_shared_variables)

    def _num_segments(self, level: str) -> int | None:
        if level == "representation":
            return self._num_cut_tensors
        if level == "parameters":
            return len(self._balanced_variables())
        return None

    @property
    def shared_variables(self) -> list:
        return self._dense_shared_variables + self._sparse_shared_variables

    @property
    def head_variables(self) -> list:
        return list(self._head_variables)

    # ------------------------------------------------------------------------------ balancer
    @property
    def balancer(self) -> Balancer:
        return self._balancer

    def set_balancer(self, balancer: str | Balancer | dict | None, **hparams: Any) -> Balancer:
        """Installs a balancer (a name with hyper-parameters, an instance or a config)."""
        balancer = balancers_lib.get(balancer, **hparams)
        if balancer is self._balancer:
            return balancer
        segments = self._num_segments(balancer.level)
        columns = None
        if balancer.level == "parameters":
            columns = sum(int(np.prod(v.shape)) for v in self._balanced_variables())
        if not balancer.built:
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
    def _forward(self, inputs, training, detach_cut):
        logits, cut, leaves, _ = self._forward_with_readouts(inputs, training, detach_cut, False)
        return logits, cut, leaves

    def _forward_with_readouts(self, inputs, training, detach_cut, factored):
        """`_forward`, plus each task's gated readouts of the cut when `factored` (see
        `Backbone.factored_heads`; None otherwise)."""
        x = self.encoder(inputs)
        cut = self.backbone.trunk(x, training=training)
        leaves = [tf.stop_gradient(c) for c in cut] if detach_cut else cut
        readouts = None
        if factored:
            task_repr, _, readouts = self.backbone.factored_heads(leaves, training=training)
        else:
            task_repr, _ = self.backbone.heads(leaves, training=training)
        logits = [
            tf.cast(out(tower(r, training=training)), tf.float32)[:, 0]
            for tower, out, r in zip(self.towers, self.logit_layers, task_repr, strict=True)
        ]
        return logits, cut, leaves, readouts

    def call(self, inputs, training=False):
        logits, _, _ = self._forward(inputs, training=training, detach_cut=False)
        outputs = {t.name: t.activation(z) for t, z in zip(self.tasks, logits, strict=True)}
        for task in self.tasks:
            if task.esmm_parent is not None:  # pCTCVR = pCTR · pCVR
                outputs[f"{task.name}_ctcvr"] = outputs[task.esmm_parent] * outputs[task.name]
        return outputs

    def gate_weights(self, inputs) -> dict:
        """Every gate's weights for the rows of `inputs`, keyed with task names."""
        gates = self.backbone.gate_weights(self.encoder(inputs))
        renamed = {}
        for key, value in gates.items():
            for k, name in enumerate(self.task_names):
                key = key.replace(f"task_{k}", name) if key.endswith(f"task_{k}") else key
            renamed[key] = value
        return renamed

    # ------------------------------------------------------------------------------ losses
    def _labels(self, y):
        if not isinstance(y, dict):
            raise TypeError(
                f"Labels must be a dict keyed by task name {self.task_names}; got {type(y)}."
            )
        unknown = sorted(set(y) - set(self.task_names))
        if unknown:
            raise ValueError(f"Labels for unknown task(s) {unknown}; the tasks are {self.task_names}.")
        labels = {}
        for task in self.tasks:
            if task.name not in y:
                raise KeyError(
                    f"No labels for task {task.name!r}; got labels for {sorted(y)}. Missing "
                    "labels within a task are NaN (or the task's missing_value), not a missing key."
                )
            value = tf.cast(y[task.name], tf.float32)
            if value.shape.rank == 2 and value.shape[-1] == 1:
                value = value[:, 0]
            elif value.shape.rank != 1:
                raise ValueError(
                    f"Labels of task {task.name!r} must have shape [batch] or [batch, 1]; got "
                    f"{value.shape}."
                )
            labels[task.name] = value
        return labels

    def _task_terms(self, y, logits, sample_weight, as_list: bool = False):
        """`(losses [K], clean labels, row weights)`: each task's (sample-weighted) mean loss over
        its valid rows — present labels inside its sample space, or every impression with a parent
        label for an ESMM task — with missing labels replaced by 0 in `clean labels`.

        `as_list=True` returns the losses as K scalars, each computed from its own task's terms
        only. Back-propagating one of them then touches that task's path alone; from an entry of
        the stacked vector, every task's head would be differentiated (with zero gradients),
        which made K per-task backward passes cost K² head passes."""
        labels = self._labels(y)
        present = {t.name: t.present_mask(labels[t.name]) for t in self.tasks}
        clean = {n: tf.where(present[n], labels[n], 0.0) for n in labels}
        row_weight = None
        if sample_weight is not None:
            row_weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        totals, counts, weights = [], [], []
        for task, logit in zip(self.tasks, logits, strict=True):
            mask = present[task.name]
            if task.sample_space is not None:
                mask &= present[task.sample_space] & (clean[task.sample_space] > 0.5)
            if task.esmm_parent is not None:
                parent = task.esmm_parent
                clicked = clean[parent] > 0.5
                # Every impression with a click label; unclicked rows have label 0 whatever the
                # conversion column says, clicked rows need their conversion label.
                mask = present[parent] & (present[task.name] | ~clicked)
                per_example = esmm_cross_entropy(
                    tf.where(clicked, clean[task.name], 0.0),
                    logits[self.task_names.index(parent)], logit)
            else:
                per_example = task.per_example_loss(clean[task.name], logit)
            weight = tf.cast(mask, tf.float32)
            if row_weight is not None:
                weight *= row_weight
            # where(), not a product: a masked row's loss may be inf/NaN and 0·inf is NaN.
            per_example = tf.where(mask, per_example, 0.0)
            totals.append(tf.reduce_sum(weight * per_example))
            counts.append(tf.reduce_sum(weight))
            weights.append(weight)
        counts = tf.stack(counts)
        replica, _ = replica_context()
        if replica is not None:
            # Divide by the global count: each replica's loss is then its share of the global
            # mean, the shares sum to it, and so do their gradients (the optimizer sums them).
            counts = replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(counts))
        shares = [tf.math.divide_no_nan(total, count)
                  for total, count in zip(totals, tf.unstack(counts), strict=True)]
        return (shares if as_list else tf.stack(shares)), clean, weights

    def _global_losses(self, shares):
        """The global batch's task losses from this replica's shares (themselves when alone)."""
        replica, _ = replica_context()
        if replica is None:
            return shares
        return replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(shares))

    # ------------------------------------------------------------------------------ gradients
    def compute_gradients(self, x, y, sample_weight=None, training=True):
        """One step's gradients, exactly as `train_step` applies them.

        Returns `(grads, variables, terms, balance_result)`: `grads[i]` goes with `variables[i]`
        (the model's trainable variables, in order; None where unused); `terms` is
        `(task_losses, clean_labels, row_weights, logits)`, what the metrics need.
        """
        balancer = self._balancer
        context = BalanceContext(
            step=self.optimizer.iterations if getattr(self, "optimizer", None) is not None
            else tf.constant(0, tf.int64),
            epoch=self.epoch.value,
        )
        if isinstance(balancer, EveryK) and balancer.level != "losses":
            return self._gradients_every_k(balancer, x, y, sample_weight, training, context)
        return self._gradients(balancer, x, y, sample_weight, training, context)

    def _gradients(self, balancer, x, y, sample_weight, training, context):
        # Under loss scaling (mixed_float16) every gradient leaves here scaled, as the loss-scale
        # optimizer expects; the balancer alone sees them unscaled and in float32.
        scale = self._loss_scale()
        if balancer.level == "losses":
            with tf.GradientTape() as tape:
                logits, _, _ = self._forward(x, training=training, detach_cut=False)
                shares, clean, row_weights = self._task_terms(y, logits, sample_weight)
                raw_losses = self._global_losses(shares)
                result = balancer.balance(None, self._weighted_losses(raw_losses), context)
                total = tf.reduce_sum(tf.stop_gradient(result.task_weights)
                                      * self._weighted_losses(shares))
                if scale is not None:
                    total = total * scale
            variables = self.trainable_variables
            grads = tape.gradient(total, variables)
            return grads, variables, (raw_losses, clean, row_weights, logits), result

        replica, num_replicas = replica_context()
        # At the representation level on one replica, cut gradients that a task forms through a
        # gate stay factored (gate weights ⊗ mixture gradient); the balancer's Gramians, norms
        # and combination work on the factors. Elsewhere they are materialised.
        factored = balancer.level == "representation" and replica is None
        with tf.GradientTape(persistent=True) as tape:
            logits, cut, leaves, readouts = self._forward_with_readouts(
                x, training=training, detach_cut=True, factored=factored)
            tape.watch(leaves)
            raw_share_list, clean, row_weights = self._task_terms(y, logits, sample_weight,
                                                                  as_list=True)
            raw_shares = tf.stack(raw_share_list)
            task_losses = self._weighted_loss_list(raw_share_list)
            if scale is not None:
                task_losses = [loss * scale for loss in task_losses]
        raw_losses = self._global_losses(raw_shares)
        losses = self._weighted_losses(raw_losses)
        # One backward pass per task through its head yields both its cut gradient and its head
        # variables' gradients (a second pass for the heads would run every head backward twice).
        heads = self._head_variables
        num_leaves, num_heads = len(leaves), len(heads)
        scaled_cut_grads, task_head_grads = [], []
        # Every task's readouts are targets of every task's pass: a loss may read another task's
        # head (ESMM's pCTCVR reads the click tower), and unconnected ones come back None.
        all_readouts = [r for task in readouts for r in task] if factored else []
        for loss in task_losses:
            grads = tape.gradient(loss, [*leaves, *heads, *(r.term for r in all_readouts)])
            blocks = list(grads[:num_leaves])
            outers = {}
            for readout, term_grad in zip(all_readouts, grads[num_leaves + num_heads:],
                                          strict=True):
                if term_grad is not None:
                    outers.setdefault(readout.cut_index, []).append(
                        OuterProductBlock(tf.stop_gradient(readout.weights), term_grad))
            for s, terms in outers.items():
                if len(terms) == 1 and blocks[s] is None:
                    blocks[s] = terms[0]
                else:  # several paths into one cut tensor: their sum is materialised
                    dense = [] if blocks[s] is None else [blocks[s]]
                    blocks[s] = tf.add_n(dense + [t.dense() for t in terms])
            if not factored:  # dense blocks, as the parameter level and replicas need them
                blocks = [tf.zeros_like(leaf) if g is None else g
                          for g, leaf in zip(blocks, leaves, strict=True)]
            scaled_cut_grads.append(blocks)
            task_head_grads.append(grads[num_leaves:num_leaves + num_heads])
        for s, leaf in enumerate(leaves):
            if all(row[s] is None for row in scaled_cut_grads):  # no task reaches this tensor
                scaled_cut_grads[0][s] = tf.zeros_like(leaf)
        cut_grads = [[_unscaled_block(g, scale) for g in row] for row in scaled_cut_grads]
        if replica is not None and balancer.needs_hessian_term:
            raise NotImplementedError(
                f"Balancer {balancer.name!r} needs an exact Hessian term, which is not computed "
                "across replicas yet; train it without a distribution strategy, or with one "
                "replica.")
        grads_by_id = {}
        if balancer.level == "representation":
            blocks, shapes = cut_grads, leaves
            if replica is not None:
                # Every replica balances the whole global batch: its cut gradients are rows of
                # the global matrix, gathered here, so every balancer (Gramians, norms, per-entry
                # methods) decides exactly as on one device; each then keeps its own rows.
                offset, rows = _row_offset(replica, leaves[0])
                blocks = replica.all_gather(cut_grads, axis=0)
                shapes = blocks[0]
            context = context._replace(segment_sizes=tuple(tf.size(b) for b in shapes),
                                       batch_size=tf.shape(shapes[0])[0],
                                       cut_tensors=tuple(shapes))
            result = balancer.balance_blocks(blocks, losses, context)
            combined = result.combined
            if not isinstance(combined, list | tuple):
                combined = _unflatten(combined, shapes)
            if replica is not None:
                combined = [c[offset:offset + rows] for c in combined]
            combined = [_rescaled(c, scale, leaf.dtype)
                        for c, leaf in zip(combined, leaves, strict=True)]
            shared = self.shared_variables
            for v, g in zip(shared, tape.gradient(cut, shared, output_gradients=combined,
                                                    unconnected_gradients=_ZERO), strict=True):
                grads_by_id[id(v)] = g
        else:
            balanced = self._balanced_variables()
            sparse = [v for v in self._sparse_shared_variables
                      if not self.dense_embedding_gradients]
            rows = [
                _unscaled(_flatten(tape.gradient(cut, balanced, output_gradients=g,
                                                 unconnected_gradients=_ZERO)), scale)
                for g in scaled_cut_grads
            ]
            context = context._replace(
                segment_sizes=tuple(int(np.prod(v.shape)) for v in balanced))
            if balancer.needs_hessian_term:
                context = context._replace(hessian_term=transference_hessian_term(
                    lambda: self._weighted_losses(self._task_terms(
                        y, self._forward(x, training=training, detach_cut=False)[0],
                        sample_weight)[0]),
                    balanced))
            matrix = tf.stack(rows)
            if replica is not None:
                # The global task gradients are the sums of the replicas' (K × D values per
                # replica on the wire); every replica then balances the same matrix, and hands
                # the optimizer 1/N of the result, since the optimizer sums across replicas.
                matrix = replica.all_reduce(tf.distribute.ReduceOp.SUM, matrix)
            result = balancer.balance(matrix, losses, context)
            combined = _rescaled(result.combined, scale, tf.float32)
            if replica is not None:
                combined = combined / tf.cast(num_replicas, combined.dtype)
            for v, g in zip(balanced, _unflatten(combined, balanced), strict=True):
                grads_by_id[id(v)] = g
            if sparse:
                weights = (result.task_weights if result.shared_weights is None
                           else result.shared_weights)
                weighted_cut = [_rescaled(c, scale, leaf.dtype) for c, leaf in zip(
                    block_weighted_sum(cut_grads, weights), leaves, strict=True)]
                for v, g in zip(sparse, tape.gradient(cut, sparse, output_gradients=weighted_cut),
                                strict=True):
                    grads_by_id[id(v)] = g
        head_grads = _weighted_gradient_sum(task_head_grads,
                                            tf.stop_gradient(result.task_weights))
        for v, g in zip(heads, head_grads, strict=True):
            grads_by_id[id(v)] = g
        del tape
        variables = self.trainable_variables
        grads = [grads_by_id.get(id(v)) for v in variables]
        return grads, variables, (raw_losses, clean, row_weights, logits), result

    def _loss_scale(self) -> tf.Tensor | None:
        """The loss-scale optimizer's current scale (mixed_float16), else None."""
        optimizer = getattr(self, "optimizer", None)
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return tf.cast(optimizer.dynamic_scale, tf.float32)
        return None

    def _gradients_every_k(self, balancer, x, y, sample_weight, training, context):
        """`EveryK` at a gradient level: the wrapped balancer's full path on recompute steps; on the
        others one backward pass of the stored weighting (shared: `Σ w_k L_k` with the shared
        weights, heads: with the task weights), as cheap as plain training."""
        if replica_context()[0] is not None:
            # Both branches of the step's tf.cond would hold cross-replica reductions, which
            # MirroredStrategy cannot run inside control flow.
            raise NotImplementedError(
                f"{balancer.name!r} (a balancer recomputed every {balancer.every} steps) at the "
                f"{balancer.level!r} level does not run under a multi-replica strategy yet; use "
                "the balancer without every=, or the losses level.")
        variables = self.trainable_variables
        sparse = {id(v) for v in self._sparse_shared_variables}
        if self.dense_embedding_gradients and balancer.level == "parameters":
            sparse = set()

        def canonical(grads):
            # Both branches of the cond must return the same structure: dense tensors, except
            # IndexedSlices for embedding tables; zeros where a variable got no gradient (the
            # full path already gives zeros for shared variables no task reaches).
            out = []
            for g, v in zip(grads, variables, strict=True):
                if g is None:
                    g = tf.zeros_like(v)
                if id(v) in sparse and not isinstance(g, tf.IndexedSlices):
                    g = tf.IndexedSlices(tf.convert_to_tensor(g), tf.range(tf.shape(v)[0]),
                                         tf.shape(v, out_type=tf.int64))
                elif id(v) not in sparse:
                    g = tf.convert_to_tensor(g)
                out.append(g)
            return out

        def recompute():
            grads, _, terms, result = self._gradients(balancer.inner, x, y, sample_weight, training,
                                                      context)
            shared = (result.task_weights if result.shared_weights is None
                      else result.shared_weights)
            return (canonical(grads), terms, tf.cast(result.task_weights, tf.float32),
                    tf.cast(shared, tf.float32), balancer.inner_values(result.updates))

        def reuse():
            task_weights, shared_weights = balancer.stored()
            with tf.GradientTape(persistent=True) as tape:
                logits, _, _ = self._forward(x, training=training, detach_cut=False)
                raw_losses, clean, row_weights = self._task_terms(y, logits, sample_weight)
                losses = self._weighted_losses(raw_losses)
                scale = self._loss_scale()
                if scale is not None:  # the full path's gradients come scaled too
                    losses = losses * scale
                shared_total = tf.reduce_sum(shared_weights * losses)
                head_total = tf.reduce_sum(task_weights * losses)
            by_id = dict(zip(map(id, self.shared_variables),
                             tape.gradient(shared_total, self.shared_variables), strict=True))
            by_id.update(zip(map(id, self._head_variables),
                             tape.gradient(head_total, self._head_variables), strict=True))
            del tape
            grads = [by_id.get(id(v)) for v in variables]
            return (canonical(grads), (raw_losses, clean, row_weights, logits), task_weights,
                    shared_weights, [v.value for v in balancer.inner.weights])

        grads, terms, task_weights, shared_weights, values = tf.cond(
            balancer.due(context.step), recompute, reuse)
        result = BalanceResult(None, task_weights,
                               balancer.with_bookkeeping(values, task_weights, shared_weights),
                               shared_weights=shared_weights)
        return grads, variables, terms, result

    def _weighted_losses(self, raw_losses):
        factors = [t.weight for t in self.tasks]
        if all(f == 1.0 for f in factors):
            return raw_losses
        return raw_losses * tf.constant(factors, tf.float32)

    def _weighted_loss_list(self, raw_losses: list) -> list:
        """`_weighted_losses` on a list of per-task scalars, keeping them independent."""
        return [loss if task.weight == 1.0 else loss * task.weight
                for loss, task in zip(raw_losses, self.tasks, strict=True)]

    # ------------------------------------------------------------------------------ steps
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._count_label_errors(y)
        grads, variables, terms, result = self.compute_gradients(x, y, sample_weight)
        raw_losses = terms[0]
        pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        losses_finite = tf.reduce_all(tf.math.is_finite(raw_losses))
        grads_finite = tf.constant(True)
        for g, _ in pairs:
            values = g.values if isinstance(g, tf.IndexedSlices) else g
            grads_finite &= tf.reduce_all(tf.math.is_finite(values))
        # The balancer's new state is checked like the gradients: a step that would write a
        # non-finite value into it (a NaN hyper-parameter, an overflowing ratio) is skipped.
        updates = list(result.updates)
        state_finite = _all_finite(value for _, value in updates)

        balancer = self._balancer
        replica, num_replicas = replica_context()
        if replica is not None:  # one replica's NaN skips the step everywhere
            failures = replica.all_reduce(
                tf.distribute.ReduceOp.SUM,
                tf.stack([1.0 - tf.cast(flag, tf.float32)
                          for flag in (losses_finite, grads_finite, state_finite)]))
            losses_finite, grads_finite, state_finite = tf.unstack(tf.equal(failures, 0.0))
        finite = losses_finite & grads_finite & state_finite
        # A loss-scale optimizer must see overflowing gradients (it halves its scale and skips
        # the update itself; the balancer state derived from them is non-finite too and is not
        # written); bad data (a non-finite loss) and a non-finite state from finite gradients
        # never reach any optimizer.
        scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        overflow_only = losses_finite & (state_finite | ~grads_finite)
        self._apply_if(overflow_only if scaled else finite, [g for g, _ in pairs],
                       [v for _, v in pairs], replica)
        # State updates are selected rather than branched on: the same code then runs on one
        # device and on several (where a branch may not hold cross-replica reductions).
        post_finite = tf.constant(True)
        if balancer.needs_post_step_losses:  # FAMO: the updated model's losses, same batch
            logits_after, _, _ = self._forward(x, training=True, detach_cut=False)
            after = self._global_losses(self._task_terms(y, logits_after, sample_weight)[0])
            post = list(balancer.post_step_updates(self._weighted_losses(raw_losses),
                                                   self._weighted_losses(after)))
            # The update has been applied by now; what can still be refused is the state write.
            post_finite = tf.reduce_all(tf.math.is_finite(after)) & _all_finite(
                value for _, value in post)
            if replica is not None:
                post_finite = tf.equal(replica.all_reduce(
                    tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(post_finite, tf.float32)), 0.0)
            updates += post
        writes = finite & post_finite
        for variable, value in updates:
            variable.assign(tf.where(writes, tf.cast(value, variable.dtype), variable))
        # Sums over replicas are read back summed: count a step once in all.
        share = 1.0 / num_replicas
        self.step_counter.update_state(share)
        self.skipped_steps.update_state((1.0 - tf.cast(writes, tf.float32)) * share)
        reasons = (~losses_finite, losses_finite & ~grads_finite,
                   losses_finite & grads_finite & (~state_finite | ~post_finite))
        for counter, reason in zip(self.skip_reason_counters, reasons, strict=True):
            counter.update_state(tf.cast(reason, tf.float32) * share)
        self._update_metrics(x, terms, finite)
        weights = result.task_weights if result.shared_weights is None else result.shared_weights
        weights = tf.where(finite, tf.cast(weights, tf.float32), 0.0)
        has_rows = tf.stack([tf.cast(tf.reduce_sum(w) > 0, tf.float32) for w in terms[2]])
        keep = tf.cast(finite, tf.float32) * has_rows
        for tracker, weight, k in zip(self.balance_weight_trackers, tf.unstack(weights),
                                      tf.unstack(keep), strict=True):
            tracker.update_state(weight, sample_weight=k)
        return _for_keras_reduction(self._train_logs())

    def _apply_if(self, finite, grads, variables, replica):
        """`optimizer.apply(grads, variables)` on finite steps only (optimizer state untouched
        otherwise)."""
        def apply():
            self.optimizer.apply(grads, variables)
            return tf.constant(0.0)

        def skip():
            return tf.constant(0.0)

        if replica is None or tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.cond(finite, apply, skip)
            return

        # MirroredStrategy all-reduces gradients with a merge call, which it cannot run inside a
        # tf.cond in replica context: branch once in cross-replica context instead, as Keras'
        # LossScaleOptimizer does. Every replica agrees on `finite` (reduced by the caller).
        def cross_replica(distribution, finite, grads):
            decided = distribution.experimental_local_results(finite)[0]

            def apply_everywhere():
                distribution.extended.call_for_each_replica(
                    lambda g: self.optimizer.apply(g, variables), args=(grads,))
                return tf.constant(0.0)

            tf.cond(decided, apply_everywhere, skip)

        replica.merge_call(cross_replica, args=(finite, grads))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._count_label_errors(y)
        logits, _, _ = self._forward(x, training=False, detach_cut=False)
        shares, clean, row_weights = self._task_terms(y, logits, sample_weight)
        terms = (self._global_losses(shares), clean, row_weights, logits)
        self._update_metrics(x, terms, tf.constant(True))
        return _for_keras_reduction(self._logs())

    def _update_metrics(self, x, terms, finite):
        raw_losses, clean, row_weights, logits = terms
        # A skipped (non-finite) step must not poison the running means either.
        keep = tf.cast(finite, tf.float32)
        safe_losses = tf.where(finite, raw_losses, 0.0)
        factors = tf.constant([t.weight for t in self.tasks], tf.float32)
        self.loss_tracker.update_state(tf.reduce_sum(factors * safe_losses), sample_weight=keep)
        labelled = []
        for k, task in enumerate(self.tasks):
            metric_weight = row_weights[k]
            if task.esmm_parent is not None:  # pCVR is judged where the parent happened
                metric_weight = metric_weight * tf.cast(clean[task.esmm_parent] > 0.5, tf.float32)
            labelled.append(tf.reduce_sum(metric_weight) * keep)
            has_rows = tf.cast(tf.reduce_sum(row_weights[k]) > 0, tf.float32)
            self.task_loss_trackers[k].update_state(safe_losses[k], sample_weight=keep * has_rows)
            predictions = task.activation(logits[k])
            predictions = tf.where(tf.math.is_finite(predictions), predictions, 0.0)
            for metric in self.task_metrics[k]:
                kwargs = {}
                group = group_feature_of(metric)
                if group is not None:
                    if group not in x:
                        raise KeyError(
                            f"Metric {metric.name!r} groups rows by feature {group!r}, which is "
                            f"not in the inputs {sorted(x)}."
                        )
                    kwargs["groups"] = x[group]
                metric.update_state(clean[task.name], predictions,
                                    sample_weight=metric_weight * keep, **kwargs)
        self.labelled_row_counts.update_state(tf.stack(labelled))

    def _logs(self):
        """The running loss, task losses and task metrics. A task that has had no labelled row
        so far logs NaN for its loss and metrics: Keras' metrics report 0 with no data (`AUC
        0.0`), which reads as a result."""
        logs = {self.loss_tracker.name: self.loss_tracker.result()}
        rows = tf.unstack(self.labelled_row_counts.counts)
        for k, tracker in enumerate(self.task_loss_trackers):
            logs[tracker.name] = _mean_or_nan(tracker)
            for metric in self.task_metrics[k]:
                value = metric.result()
                logs[metric.name] = tf.where(rows[k] > 0, value, tf.cast(float("nan"), value.dtype))
        return logs

    def _train_logs(self):
        """`_logs` plus the training-only entries: skip counters (totals) and balancer weights."""
        logs = self._logs()
        logs[self.skipped_steps.name] = self.skipped_steps.result()
        for counter in self.skip_reason_counters:
            logs[counter.name] = counter.result()
        for tracker in self.balance_weight_trackers:
            logs[tracker.name] = _mean_or_nan(tracker)
        return logs

    def get_metrics_result(self):
        """The logged values (`loss`, task losses and metrics, skip counters, balancer weights),
        NaN where undefined, read from the metrics' state. Keras uses these for the epoch's
        logs; outside the step they are read across replicas, so under a distribution strategy
        they are global (sums), where a step's returned logs hold one replica's values."""
        return self._train_logs()

    def _get_metrics_result_or_logs(self, logs):
        # Keras (3.x) takes `get_metrics_result()` for the epoch's logs only when its keys equal
        # the step's; evaluate's logs are a subset (no skip counters, no weights): take those.
        results = self.get_metrics_result()
        if isinstance(logs, dict) and logs and set(logs) <= set(results):
            return {key: results[key] for key in logs}
        return logs

    # ------------------------------------------------------------------------------ checks
    def _count_label_errors(self, y) -> None:
        """Counts, per task, labels the task cannot mean (in the step; a few reductions).

        Binary tasks take 0 or 1, NaN or the task's `missing_value` for a missing label; anything
        else (2, −1, ±inf) is counted. An ESMM task labelled 1 on a row whose parent is 0 (a
        conversion without a click) is counted separately: the ESMM loss trains that row as a
        negative. `_TrainingGuard` reads the counts at the epoch's (evaluation's) end and raises.
        Counting instead of `tf.debugging.assert_*` because XLA drops assertions."""
        labels = self._labels(y)
        present = {t.name: t.present_mask(labels[t.name]) for t in self.tasks}
        invalid, violations = [], []
        for task in self.tasks:
            value, here = labels[task.name], present[task.name]
            if task.kind == "binary":
                bad = here & tf.not_equal(value, 0.0) & tf.not_equal(value, 1.0)
                invalid.append(tf.reduce_sum(tf.cast(bad, tf.float32)))
            else:  # non-finite regression labels already skip the step (non-finite loss)
                invalid.append(tf.constant(0.0))
            if task.esmm_parent is not None:
                parent = labels[task.esmm_parent]
                bad = here & present[task.esmm_parent] & tf.equal(value, 1.0) & tf.equal(parent, 0.0)
                violations.append(tf.reduce_sum(tf.cast(bad, tf.float32)))
            else:
                violations.append(tf.constant(0.0))
        self.invalid_label_counts.update_state(tf.stack(invalid))
        self.esmm_violation_counts.update_state(tf.stack(violations))

    def _step_report(self) -> dict:
        """The current epoch's (evaluation's) counts, as Python numbers (one device read)."""
        return {
            "steps": float(self.step_counter.result()),
            "skipped": float(self.skipped_steps.result()),
            "reasons": {r: float(c.result()) for r, c in zip(SKIP_REASONS, self.skip_reason_counters,
                                                               strict=True)},
            "invalid_labels": np.asarray(self.invalid_label_counts.result()),
            "esmm_violations": np.asarray(self.esmm_violation_counts.result()),
        }

    def _check_labels(self, report: dict, where: str) -> None:
        """ValueError for labels outside a task's range; a warning for ESMM violations."""
        bad = [(t, int(n)) for t, n in zip(self.tasks, report["invalid_labels"], strict=True)
               if n > 0]
        if bad:
            described = "; ".join(f"task {t.name!r} ({t.kind}): {n} label(s) outside {{0, 1}}"
                                  for t, n in bad)
            raise ValueError(
                f"Invalid labels in {where}: {described}. A binary task's labels must be 0 or 1; "
                "mark a missing label with NaN (or the task's missing_value), not another number."
            )
        for task, count in zip(self.tasks, report["esmm_violations"], strict=True):
            if count > 0:
                warnings.warn(
                    f"{where}: {int(count)} row(s) label ESMM task {task.name!r} 1 where its parent "
                    f"{task.esmm_parent!r} is 0. ESMM trains p({task.esmm_parent} ∧ {task.name}), "
                    f"so those rows count as negatives; check the join of the two label columns.",
                    UserWarning, stacklevel=2)

    def _all_skipped_message(self, report: dict, epoch: int) -> str:
        reasons = ", ".join(f"{int(round(n))} {_REASON_WORDS[r]}"
                            for r, n in report["reasons"].items() if n > 0)
        return (
            f"Epoch {epoch + 1}: all {int(round(report['steps']))} training steps were skipped "
            f"({reasons}), so nothing was trained; its logs are NaN. Likely causes: ±inf or NaN in "
            "features or regression labels, a learning rate that made the weights diverge, a "
            "non-finite balancer hyper-parameter or state, or (mixed precision) a loss scale "
            "that overflows on every step. `model.compute_gradients(x, y)` on one batch shows "
            "which losses or gradients are non-finite."
        )

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            *self.task_loss_trackers,
            *[m for metrics in self.task_metrics for m in metrics],
            self.skipped_steps,
            *self.skip_reason_counters,
            *self.balance_weight_trackers,
            self.step_counter,
            self.invalid_label_counts,
            self.esmm_violation_counts,
            self.labelled_row_counts,
        ]

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

    def fit(self, *args, balancer=None, callbacks=None, **kwargs):
        """`keras.Model.fit` plus `balancer=` (a name, instance or config) for this and later runs."""
        if balancer is not None:
            self.set_balancer(balancer)
        # First, so that its epoch-end work (epoch counter, NaN logs) precedes every other
        # callback's (BackupAndRestore saves the advanced counter, History records the NaNs).
        callbacks = [_TrainingGuard(), *(callbacks or [])]
        data = args[0] if args else kwargs.get("x")
        if isinstance(data, tf.data.Dataset):
            # Keras warns that shuffle=True (its default) is ignored for datasets: it is.
            kwargs.setdefault("shuffle", False)
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def evaluate(self, *args, callbacks=None, **kwargs):
        """`keras.Model.evaluate`, checking labels at the end (see `_count_label_errors`)."""
        if not isinstance(callbacks, keras.callbacks.CallbackList):  # fit's validation has it
            callbacks = [_TrainingGuard(), *(callbacks or [])]
        return super().evaluate(*args, callbacks=callbacks, **kwargs)

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
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _all_finite(tensors) -> tf.Tensor:
    """True where every floating-point tensor of `tensors` is finite (integers always are)."""
    finite = tf.constant(True)
    for tensor in tensors:
        tensor = tf.convert_to_tensor(tensor)
        if tensor.dtype.is_floating:
            finite &= tf.reduce_all(tf.math.is_finite(tensor))
    return finite


def _mean_or_nan(tracker: keras.metrics.Mean) -> tf.Tensor:
    """A running mean, NaN while it has no weight (Keras' Mean says 0)."""
    return tf.where(tracker.count > 0, tracker.result(), float("nan"))


def esmm_cross_entropy(labels, parent_logits, logits) -> tf.Tensor:
    """Cross-entropy of `p = σ(parent_logits)·σ(logits)` (pCTCVR), stable in log space."""
    log_p = -tf.nn.softplus(-parent_logits) - tf.nn.softplus(-logits)  # log σ(a) + log σ(b)
    log_not_p = tf.math.log(-tf.math.expm1(tf.minimum(log_p, -1e-7)))  # log(1 − p)
    return -(labels * log_p + (1.0 - labels) * log_not_p)


def _weighted_gradient_sum(per_task: list[list], weights: tf.Tensor) -> list:
    """`Σ_k w_k per_task[k][i]` for every variable i, skipping tasks it does not influence (None);
    None where no task does. Sparse (IndexedSlices) gradients stay sparse."""
    weights = tf.unstack(weights)
    sums = []
    for i in range(len(per_task[0])):
        terms = [(w, row[i]) for w, row in zip(weights, per_task, strict=True)
                 if row[i] is not None]
        if not terms:
            sums.append(None)
        elif any(isinstance(g, tf.IndexedSlices) for _, g in terms):
            sums.append(tf.IndexedSlices(
                tf.concat([_as_slices(g).values * tf.cast(w, g.dtype) for w, g in terms], 0),
                tf.concat([_as_slices(g).indices for _, g in terms], 0),
                terms[0][1].dense_shape))
        else:
            sums.append(tf.add_n([tf.cast(w, g.dtype) * g for w, g in terms]))
    return sums


def _as_slices(gradient) -> tf.IndexedSlices:
    if isinstance(gradient, tf.IndexedSlices):
        return gradient
    return tf.IndexedSlices(gradient, tf.range(tf.shape(gradient)[0]), tf.shape(gradient))


def _flatten(tensors) -> tf.Tensor:
    parts = [tf.convert_to_tensor(t) for t in tensors]  # densifies IndexedSlices (opt-in only)
    return tf.concat([tf.reshape(p, [-1]) for p in parts], axis=0)


def _unflatten(vector, like) -> list:
    sizes = [tf.size(t) for t in like]
    return [tf.reshape(piece, tf.shape(t)) for piece, t in zip(tf.split(vector, sizes), like,
                                                                strict=True)]


def replica_context():
    """`(replica context, number of replicas)` inside a step that runs on several replicas of a
    `tf.distribute` strategy; `(None, 1)` otherwise (no strategy, one replica, cross-replica)."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None, 1
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return None, 1
    return replica, replica.num_replicas_in_sync


def _row_offset(replica, tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Where this replica's rows start in the replica-ordered global batch, and how many."""
    rows = tf.shape(tensor)[0]
    sizes = replica.all_gather(rows[None], axis=0)
    replica_id = tf.cast(replica.replica_id_in_sync_group, tf.int32)
    return tf.reduce_sum(sizes[:replica_id]), rows


def _for_keras_reduction(logs: dict) -> dict:
    """Under MultiWorkerMirroredStrategy Keras reduces each log over the replicas with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars (Keras 3.15): give it
    one-element vectors there, which it reduces back to the same scalars."""
    strategy = tf.distribute.get_strategy()
    if not (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()):
        return logs
    return {key: tf.reshape(value, [1]) for key, value in logs.items()}


def _unscaled_block(block, scale):
    """`_unscaled` on a cut-gradient block (None stays None; a factored block's gradient factor
    is unscaled)."""
    if block is None:
        return None
    if isinstance(block, OuterProductBlock):
        return block.map(lambda g: _unscaled(g, scale))
    return _unscaled(block, scale)


def _unscaled(gradient, scale) -> tf.Tensor:
    """A gradient as a balancer sees it: float32, loss scale divided out."""
    gradient = tf.cast(gradient, tf.float32)
    return gradient if scale is None else gradient / scale


def _rescaled(gradient, scale, dtype) -> tf.Tensor:
    """A balanced gradient on its way back into autodiff: loss scale restored, compute dtype."""
    if scale is not None:
        gradient = gradient * scale
    return tf.cast(gradient, dtype)
