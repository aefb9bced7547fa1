"""One step's gradients: extract (`keras_mtl.gradients`) → balance (`keras_mtl.balancers`) → chain.

`balanced_gradients` is the whole walk of a batch up to the optimizer. It asks the balancer once,
before anything is extracted, what it needs this step (`Balancer.schedule`): task gradients at
its level, or — on the steps where it reuses stored weights (`every=k`) — nothing but the losses,
whose weighted sum is back-propagated once. Both read one recorded forward pass
(`keras_mtl.gradients.extraction.record`), so the model's forward pass is traced once, not once
per branch. The balancer never sees the tape; the gradients package never sees a balancer class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

from keras_mtl.balancers.base import BalanceContext, Balancer, BalanceResult
from keras_mtl.gradients.distribution import global_sum, replica_context
from keras_mtl.gradients.extraction import Recording
from keras_mtl.gradients.partition import VariablePartition
from keras_mtl.models.losses import TaskLosses

# `record(level, hessian_term=False)`: the model's forward pass and losses, recorded for `level`.
Record = Callable[..., Recording]


class StepGradients(NamedTuple):
    """One step's gradients, exactly as `train_step` applies them.

    `grads[i]` goes with `variables[i]` (the trainable variables, in order; None where unused;
    scaled under a loss-scale optimizer); `losses`: the global batch's `[K]` task losses
    (`Task.weight` not applied); `result`: the balancer's; `terms` and `logits`: what the
    metrics read (labels, row weights)."""

    grads: list
    variables: list
    losses: tf.Tensor
    result: BalanceResult
    terms: TaskLosses
    logits: list


def balanced_gradients(balancer: Balancer, record: Record, partition: VariablePartition,
                       context: BalanceContext) -> StepGradients:
    """The step's variable gradients and the balancer's result."""
    needed = balancer.schedule(context)
    if needed is None:
        recording = record(balancer.level, hessian_term=balancer.needs_hessian_term)
        return _balanced(balancer, recording, partition, context)
    if replica_context()[0] is not None:
        # Both branches of the cond would hold cross-replica reductions, which
        # MirroredStrategy cannot run inside control flow.
        every = getattr(balancer, "every", None)
        cadence = f"every {every} steps" if every else "on some steps only"
        raise NotImplementedError(
            f"{balancer.name!r} recomputes its weights {cadence} and reuses them between, which "
            f"does not run at the {balancer.level!r} level under a multi-replica strategy yet; "
            "use it without every=, or at the losses level.")
    # One forward pass for both branches (`every` wraps no balancer that needs the Hessian term).
    return _scheduled(needed, balancer, record(balancer.level), partition, context)


def _balanced(balancer, recording: Recording, partition, context) -> StepGradients:
    """Extract → balance → chain."""
    extraction = recording.extraction()
    result = balancer.reduce(extraction.task_gradients, context)
    return _step(extraction.outputs, extraction.chain(result), result, partition)


def _step(outputs, grads: list, result: BalanceResult, partition) -> StepGradients:
    terms, logits = outputs
    return StepGradients(grads, list(partition.variables), global_sum(terms.stacked), result,
                         terms, logits)


def _scheduled(needed, balancer, recording: Recording, partition, context) -> StepGradients:
    """A weighting's weights recomputed where `needed` (extract → balance) or its stored ones
    reused, in a cond that returns only the weights and the state's new values; the weighted
    loss sum `Σ_k w_k L_k` is then back-propagated once, outside the cond, for either.

    Only weightings are scheduled (their update is `w @ J`, the gradient of that sum), so the
    recompute branch needs no chain of its own. The backward pass and the forward pass are thus
    traced and compiled once; a recompute step pays one backward pass more than `_balanced`
    (small beside its K task gradients) for a step whose graph holds one backward pass rather
    than two (MMoE, K = 32: see `keras-mtl bench --first-step`)."""
    state = []

    def weights(result: BalanceResult):
        state.append([variable for variable, _ in result.updates])
        return (tf.cast(result.task_weights, tf.float32),
                tf.cast(result.weights_for_shared, tf.float32),
                [value for _, value in result.updates])

    def recompute():
        return weights(balancer.reduce(recording.extraction().task_gradients, context))

    task_weights, shared_weights, values = tf.cond(
        needed, recompute, lambda: weights(balancer.stored_result()))
    # Eagerly only the branch taken runs; traced, both do and must agree.
    if len(state) == 2 and [id(v) for v in state[0]] != [id(v) for v in state[1]]:
        raise AssertionError(f"{balancer.name!r}: its two branches update different state.")
    result = BalanceResult(None, task_weights, tuple(zip(state[0], values, strict=True)),
                           shared_weights=shared_weights)
    return _step(recording.outputs, recording.weighted_gradients(result), result, partition)
