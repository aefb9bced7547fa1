"""Extraction: one forward pass on a tape → `TaskGradients` at a level → variable gradients.

`record(level, run, partition, ...)` records the forward pass `run` on a tape (a `Recording`);
`recording.extraction()` (or `extract(...)`, both at once) returns an `Extraction`: its
`task_gradients` go to a balancer, and `chain(result)` turns the balancer's result back into one
gradient per trainable variable. A step that reuses stored weights takes
`recording.weighted_gradients(result)` instead: the weighted loss sum's gradients, one backward
pass, nothing extracted per task. At each level:

- losses level: no per-task gradient; `chain` back-propagates `Σ_k w_k L_k` once (shared
  parameters with the result's shared weights, heads with its task weights) — on one replica
  without XLA through the detached cut, as `weighted_gradients` does (see `record`).
- representation level: the heads run on stop-gradient copies of the backbone's cut ("leaves"),
  so `∂L_k/∂cut` costs only the heads. One backward pass per task through its head yields its cut
  blocks and its head gradients at once; blocks stay factored where a gate reads the cut
  (`Backbone.factored_heads`, `blocks.OuterProductBlock`). `chain` sends the combined `[D]`
  gradient through the trunk in one backward pass (`output_gradients`).
- parameter level: each task's cut gradient is chained through the trunk (one vector-Jacobian
  product per task, exact), flattened into the `[K, D]` matrix; `chain` unflattens the combined
  update onto the balanced variables and updates embedding tables left out of the matrix with the
  weighted sum of the cut gradients.

Under loss scaling every gradient leaves `chain` scaled, as the loss-scale optimizer expects; the
balancer alone sees them unscaled and in float32. Under several replicas the balancer sees the
global batch (see `distribution`). This module imports no balancer: a result is anything with
`combined`, `task_weights` and `weights_for_shared`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from keras_mtl.gradients.blocks import (
    OuterProductBlock,
    block_sum,
    block_weighted_sum,
    compiling_with_xla,
)
from keras_mtl.gradients.distribution import (
    global_sum,
    replica_context,
    rescaled,
    row_offset,
    unscaled,
    unscaled_block,
)
from keras_mtl.gradients.hessian import transference_hessian_term
from keras_mtl.gradients.layout import GradientLayout
from keras_mtl.gradients.partition import VariablePartition
from keras_mtl.gradients.task_gradients import LEVELS, TaskGradients

_ZERO = tf.UnconnectedGradients.ZERO


class TapedPass(NamedTuple):
    """What one forward pass leaves for extraction.

    - `losses`: K scalar task losses (`Task.weight` applied; this replica's shares), each from its
      own task's terms only.
    - `cut`: the backbone's cut tensors; `leaves`: what the heads read (stop-gradient copies of
      `cut` when the pass was asked to detach, else `cut` itself).
    - `readouts`: per task, its gated readouts of the cut (`Backbone.factored_heads`) when asked
      for, else None.
    - `outputs`: anything the caller wants back (logits, labels), passed through untouched.
    - `auxiliary`: a scalar loss that is not a task's (layer losses such as a gate's
      regulariser), or None. No balancer sees it: `chain` adds its gradient, with weight 1, to
      every variable it depends on (this replica's share of it under several replicas).
    """

    losses: Sequence[tf.Tensor]
    cut: Sequence[tf.Tensor]
    leaves: Sequence[tf.Tensor]
    readouts: Sequence | None = None
    outputs: Any = None
    auxiliary: tf.Tensor | None = None


# `run(detach_cut, factored, watch)` performs the forward pass and the losses (on the caller's
# tape). With `detach_cut`, it must hand its stop-gradient copies of the cut to `watch` (when not
# None) as soon as they exist, before the heads read them: an op that reads only such a copy
# (a slice, a reshape, a scaling — no variable involved) is recorded only if the copy is watched
# by then, and a copy watched later would silently lose the gradient through it.
ForwardPass = Callable[[bool, bool, Callable | None], TapedPass]


class Extraction:
    """One step's task gradients, and the tape that chains a balancer's result back."""

    def __init__(self, task_gradients: TaskGradients, outputs: Any, chain: Callable):
        self.task_gradients = task_gradients
        self.outputs = outputs
        self._chain = chain

    def chain(self, result) -> list:
        """One gradient per variable of the partition (None where a variable gets none)."""
        return self._chain(result)


class Recording:
    """One forward pass recorded on a tape, before anything is taken from it.

    Two things can be taken from it: the task information at its level (`extraction()`), or
    only the gradients of the weighted loss sum `Σ_k w_k L_k` for a given result
    (`weighted_gradients(result)`: one backward pass, the cost of plain training). A step that
    decides between the two in a `tf.cond` (a balancer that recomputes its weights every k
    steps) records once, outside the cond, so the model's forward pass is traced and compiled
    once rather than once per branch."""

    def __init__(self, level, tape, taped: TapedPass, losses, scaled_losses, partition, scale,
                 factored, hessian_run, detached=True):
        self.level = level
        # Whether the heads read a detached cut (always at the gradient levels; at the losses
        # level when `record` chose the backward pass through the cut).
        self.detached = detached
        self.outputs = taped.outputs
        # `losses`: the stacked `[K]` losses; `scaled_losses`: each task's scalar, times the loss
        # scale under mixed precision (both recorded on the tape).
        self._tape, self._taped = tape, taped
        self._losses, self._scaled_losses = losses, scaled_losses
        self._partition, self._scale, self._factored = partition, scale, factored
        self._hessian_run = hessian_run

    def extraction(self) -> Extraction:
        """The task information at this recording's level, and the chain back to variables."""
        tape, taped, partition, scale = self._tape, self._taped, self._partition, self._scale
        global_losses = global_sum(self._losses)
        if self.level == "losses":  # nothing per task: the chain is the weighted loss sum's
            return Extraction(TaskGradients("losses", global_losses), taped.outputs,
                              self.weighted_gradients)
        replica, num_replicas = replica_context()
        cut_rows, head_rows = _cut_and_head_gradients(tape, taped, self._scaled_losses,
                                                      partition.heads, self._factored)
        unscaled_rows = [[unscaled_block(g, scale) for g in row] for row in cut_rows]

        def head_gradients(result) -> list:
            return weighted_gradient_sum(head_rows, tf.stop_gradient(result.task_weights))

        if self.level == "representation":
            extraction = _representation_level(tape, taped, unscaled_rows, global_losses,
                                               partition, scale, replica, head_gradients)
        else:
            extraction = _parameter_level(tape, taped, cut_rows, unscaled_rows, global_losses,
                                          partition, scale, replica, num_replicas,
                                          head_gradients, self._hessian_run)
        return _with_auxiliary(extraction, tape, taped.auxiliary, partition, scale)

    def weighted_gradients(self, result) -> list:
        """One gradient per variable of the partition for `Σ_k w_k L_k`: shared variables with
        `result.weights_for_shared`, heads with `result.task_weights` (scaled under loss scaling,
        as `Extraction.chain`'s). Nothing is extracted per task: at a gradient level the heads
        are back-propagated once to the detached cut, and the trunk once from there."""
        tape, taped, partition, scale = self._tape, self._taped, self._partition, self._scale
        if not self.detached:
            grads = weighted_loss_gradients(tape, self._losses, partition,
                                            result.weights_for_shared, result.task_weights, scale)
        else:
            grads = _weighted_through_cut(tape, taped, self._losses, partition,
                                          result.weights_for_shared, result.task_weights, scale)
        return _auxiliary_added(grads, tape, taped.auxiliary, partition, scale)


def record(level: str, run: ForwardPass, partition: VariablePartition,
           scale: tf.Tensor | None = None, hessian_term: bool = False) -> Recording:
    """Runs `run` on a tape, in the form `level` needs (the heads on a detached cut at the
    gradient levels, and at the losses level on one replica without XLA; factored readouts on
    a detached cut on one replica, except at the parameter level).

    `scale`: the loss scale under mixed precision (None otherwise); `hessian_term`: the
    parameter-level extraction also computes the exact `Σ_i H_i (S − g_i)` over the balanced
    parameters (one replica)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")
    replica, _ = replica_context()
    if level != "losses" and hessian_term and replica is not None:
        raise NotImplementedError(
            "The exact Hessian term is not computed across replicas yet; train this balancer "
            "without a distribution strategy, or with one replica.")
    # At the losses level too, on one replica without XLA, the heads read a detached cut and
    # the weighted loss sum goes back through it (`weighted_gradients`): the gated readouts'
    # gradients then reach the experts as one batched product, where TensorFlow's own backward
    # pass accumulates one `[batch, experts, units]` product per task — plain training ran
    # 1.4-1.5x faster so on MMoE and 1.04-1.16x on PLE at K = 4 and 8 (`ew@representation`
    # against `ew`, docs/bench.md). Under XLA, which fuses those products, it ran no faster.
    detached = level != "losses" or (replica is None and not compiling_with_xla())
    # Factored blocks are kept on one replica; the parameter level (and gathering across
    # replicas) needs them dense.
    factored = detached and level in ("representation", "losses") and replica is None
    with tf.GradientTape(persistent=True) as tape:
        taped = run(detached, factored, tape.watch if detached else None)
        losses = list(taped.losses)
        scaled_losses = losses if scale is None or not detached else [
            loss * tf.cast(scale, loss.dtype) for loss in losses]
        stacked = tf.stack(losses)
    return Recording(level, tape, taped, stacked, scaled_losses, partition, scale, factored,
                     run if hessian_term and level == "parameters" else None, detached)


def extract(level: str, run: ForwardPass, partition: VariablePartition,
            scale: tf.Tensor | None = None, hessian_term: bool = False) -> Extraction:
    """Runs `run` on a tape and extracts the task information `level` asks for
    (`record(...).extraction()`)."""
    return record(level, run, partition, scale, hessian_term).extraction()


def _with_auxiliary(extraction: Extraction, tape, auxiliary, partition: VariablePartition,
                    scale) -> Extraction:
    """`extraction` whose `chain` also adds `∇ auxiliary` (weight 1, outside the balancer) to
    the variables it reaches; the same extraction when there is no auxiliary loss."""
    if auxiliary is None:
        return extraction
    inner = extraction.chain

    def chain(result) -> list:
        return _auxiliary_added(inner(result), tape, auxiliary, partition, scale)

    return Extraction(extraction.task_gradients, extraction.outputs, chain)


def _auxiliary_added(grads: list, tape, auxiliary, partition: VariablePartition, scale) -> list:
    """`grads` plus `∇ auxiliary` (weight 1) on the variables it reaches."""
    if auxiliary is None:
        return grads
    _, num_replicas = replica_context()
    # The optimizer sums the replicas' gradients: each contributes 1/N of its batch mean. Under
    # loss scaling the gradient leaves scaled like the task gradients.
    factor = 1.0 / num_replicas
    cotangent = tf.constant(factor, auxiliary.dtype) if scale is None else (
        tf.cast(scale, auxiliary.dtype) * factor)
    extra = tape.gradient(auxiliary, list(partition.variables), output_gradients=cotangent)
    return [_added(g, a) for g, a in zip(grads, extra, strict=True)]


def _loss_cotangent(weights, dtype, scale) -> tf.Tensor:
    """Per-task weights as the output gradient of the `[K]` losses: constants (nothing more is
    recorded on the tape), times the loss scale under mixed precision."""
    weights = tf.stop_gradient(tf.cast(weights, dtype))
    return weights if scale is None else weights * tf.cast(scale, dtype)


def _added(g, a):
    """The sum of two gradients of one variable (None for no gradient; slices stay sparse when
    both are)."""
    if a is None or g is None:
        return g if a is None else a
    if isinstance(g, tf.IndexedSlices) and isinstance(a, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([g.values, tf.cast(a.values, g.values.dtype)], 0),
                                tf.concat([g.indices, a.indices], 0), g.dense_shape)
    g = tf.convert_to_tensor(g)
    return g + tf.cast(tf.convert_to_tensor(a), g.dtype)


def weighted_loss_gradients(tape, losses, partition: VariablePartition, shared_weights,
                            head_weights, scale=None) -> list:
    """Gradients of `Σ_k w_k L_k` from a (persistent) tape that recorded the `[K]` `losses`:
    shared variables with `shared_weights`, heads with `head_weights` (one backward pass when
    they are the same tensor). The weights enter as output gradients: constants, and nothing
    more needs recording on the tape."""
    def cotangent(weights):
        return _loss_cotangent(weights, losses.dtype, scale)

    if head_weights is shared_weights:
        return list(tape.gradient(losses, list(partition.variables),
                                  output_gradients=cotangent(shared_weights)))
    by_id = dict(zip(map(id, partition.shared), tape.gradient(
        losses, list(partition.shared), output_gradients=cotangent(shared_weights)), strict=True))
    by_id.update(zip(map(id, partition.heads), tape.gradient(
        losses, list(partition.heads), output_gradients=cotangent(head_weights)), strict=True))
    return [by_id.get(id(v)) for v in partition.variables]


def _cut_and_head_gradients(tape, taped: TapedPass, losses, heads, factored):
    """Per task: its blocks at the cut (scaled as the losses are) and its head gradients."""
    leaves = list(taped.leaves)
    num_leaves, num_heads = len(leaves), len(heads)
    # Every task's readouts are targets of every task's pass: a loss may read another task's
    # head (ESMM's pCTCVR reads the click tower), and unconnected ones come back None.
    readouts = [r for task in taped.readouts or () for r in task] if factored else []
    cut_rows, head_rows = [], []
    for loss in losses:
        grads = tape.gradient(loss, [*leaves, *heads, *(r.term for r in readouts)])
        blocks = list(grads[:num_leaves])
        outers = {}
        for readout, term_grad in zip(readouts, grads[num_leaves + num_heads:], strict=True):
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
        cut_rows.append(blocks)
        head_rows.append(grads[num_leaves:num_leaves + num_heads])
    for s, leaf in enumerate(leaves):
        if all(row[s] is None for row in cut_rows):  # no task reaches this tensor
            cut_rows[0][s] = tf.zeros_like(leaf)
    return cut_rows, head_rows


def _weighted_through_cut(tape, taped: TapedPass, losses, partition: VariablePartition,
                          shared_weights, head_weights, scale) -> list:
    """`Σ_k w_k L_k`'s gradients from a pass whose heads read a detached cut: the heads' backward
    pass reaches the cut copies (and the gated readouts' terms, whose gradient is the outer
    product with the gate weights), and their sum goes through the trunk in one backward pass —
    the two halves of the single pass that plain training takes."""
    leaves = list(taped.leaves)
    readouts = [r for task in taped.readouts or () for r in task]
    cut_side = [*leaves, *(r.term for r in readouts)]
    heads = list(partition.heads)

    def cotangent(weights):
        return _loss_cotangent(weights, losses.dtype, scale)

    if head_weights is shared_weights:
        grads = tape.gradient(losses, [*cut_side, *heads],
                              output_gradients=cotangent(shared_weights))
        cut_grads, head_grads = grads[:len(cut_side)], grads[len(cut_side):]
    else:
        cut_grads = tape.gradient(losses, cut_side, output_gradients=cotangent(shared_weights))
        head_grads = tape.gradient(losses, heads, output_gradients=cotangent(head_weights))
    rows = [list(cut_grads[:len(leaves)])]
    for readout, grad in zip(readouts, cut_grads[len(leaves):], strict=True):
        if grad is not None:
            row = [None] * len(leaves)
            row[readout.cut_index] = OuterProductBlock(tf.stop_gradient(readout.weights), grad)
            rows.append(row)
    # Only the cut tensors some task reaches go back through the trunk: a shared variable that
    # no loss reaches gets None, as from plain training's pass (the optimizer leaves it alone
    # rather than applying momentum to a zero gradient).
    reached = [s for s in range(len(leaves)) if any(row[s] is not None for row in rows)]
    shared = list(partition.shared)
    grads = [None] * len(shared)
    if reached:
        columns = [[row[s] for s in reached] for row in rows]
        grads = tape.gradient([taped.cut[s] for s in reached], shared,
                              output_gradients=block_sum(columns))
    by_id = dict(zip(map(id, shared), grads, strict=True))
    by_id.update(zip(map(id, heads), head_grads, strict=True))
    return [by_id.get(id(v)) for v in partition.variables]


def _representation_level(tape, taped, cut_rows, losses, partition, scale, replica,
                          head_gradients) -> Extraction:
    leaves = list(taped.leaves)
    blocks, shapes = cut_rows, leaves
    offset = rows = None
    if replica is not None:
        # Every replica balances the whole global batch: its cut gradients are rows of the
        # global matrix, gathered here, so every balancer (Gramians, norms, per-entry methods)
        # decides exactly as on one device; each then keeps its own rows.
        offset, rows = row_offset(replica, leaves[0])
        blocks = replica.all_gather(cut_rows, axis=0)
        shapes = blocks[0]
    layout = GradientLayout(segment_sizes=tuple(tf.size(b) for b in shapes),
                            batch_size=tf.shape(shapes[0])[0], cut_tensors=tuple(shapes))

    def chain(result):
        combined = result.combined
        if not isinstance(combined, list | tuple):
            combined = unflatten(combined, shapes)
        if replica is not None:
            combined = [c[offset:offset + rows] for c in combined]
        combined = [rescaled(c, scale, leaf.dtype) for c, leaf in zip(combined, leaves, strict=True)]
        shared = list(partition.shared)
        by_id = dict(zip(map(id, shared), tape.gradient(
            list(taped.cut), shared, output_gradients=combined, unconnected_gradients=_ZERO),
            strict=True))
        by_id.update(zip(map(id, partition.heads), head_gradients(result), strict=True))
        return [by_id.get(id(v)) for v in partition.variables]

    gradients = TaskGradients("representation", losses, blocks=blocks, layout=layout)
    return Extraction(gradients, taped.outputs, chain)


def _parameter_level(tape, taped, scaled_cut_rows, cut_rows, losses, partition, scale, replica,
                     num_replicas, head_gradients, hessian_run) -> Extraction:
    cut, leaves = list(taped.cut), list(taped.leaves)
    balanced = list(partition.balanced)
    rows = [unscaled(flatten(tape.gradient(cut, balanced, output_gradients=g,
                                           unconnected_gradients=_ZERO)), scale)
            for g in scaled_cut_rows]
    matrix = tf.stack(rows)
    if replica is not None:
        # The global task gradients are the sums of the replicas' (K × D values per replica on
        # the wire); every replica then balances the same matrix, and hands the optimizer 1/N of
        # the result, since the optimizer sums across replicas.
        matrix = replica.all_reduce(tf.distribute.ReduceOp.SUM, matrix)
    term = None
    if hessian_run is not None:
        term = transference_hessian_term(
            lambda: tf.stack(list(hessian_run(False, False, None).losses)), balanced)
    layout = GradientLayout(segment_sizes=tuple(int(np.prod(v.shape)) for v in balanced))

    def chain(result):
        combined = rescaled(result.combined, scale, tf.float32)
        if replica is not None:
            combined = combined / tf.cast(num_replicas, combined.dtype)
        by_id = dict(zip(map(id, balanced), unflatten(combined, balanced), strict=True))
        tables = list(partition.unbalanced_tables)
        if tables:
            weighted_cut = [rescaled(c, scale, leaf.dtype) for c, leaf in zip(
                block_weighted_sum(cut_rows, result.weights_for_shared), leaves, strict=True)]
            by_id.update(zip(map(id, tables), tape.gradient(cut, tables,
                                                            output_gradients=weighted_cut),
                             strict=True))
        by_id.update(zip(map(id, partition.heads), head_gradients(result), strict=True))
        return [by_id.get(id(v)) for v in partition.variables]

    gradients = TaskGradients("parameters", losses, matrix=matrix, layout=layout,
                              hessian_term=term)
    return Extraction(gradients, taped.outputs, chain)


def weighted_gradient_sum(per_task: list[list], weights: tf.Tensor) -> list:
    """`Σ_k w_k per_task[k][i]` for every variable i, skipping tasks it does not influence (None);
    None where no task does. Sparse (IndexedSlices) gradients stay sparse."""
    weights = tf.unstack(weights)
    if not per_task or not per_task[0]:
        return []
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


def flatten(tensors) -> tf.Tensor:
    """Tensors (or IndexedSlices, densified) as one flat vector."""
    parts = [tf.convert_to_tensor(t) for t in tensors]
    return tf.concat([tf.reshape(p, [-1]) for p in parts], axis=0)


def unflatten(vector, like) -> list:
    """A flat vector cut into tensors shaped like `like`."""
    sizes = [tf.size(t) for t in like]
    return [tf.reshape(piece, tf.shape(t)) for piece, t in zip(tf.split(vector, sizes), like,
                                                                strict=True)]
