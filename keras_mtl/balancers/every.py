"""Recompute a weighting's weights every k steps only (Nash-MTL's `update_weights_every`, for all)."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_mtl.balancers.base import LEVELS, BalanceContext, Balancer, BalanceResult, Weighting
from keras_mtl.balancers.linalg import weighted_sum


@keras.saving.register_keras_serializable(package="keras_mtl")
class EveryK(Balancer):
    """Wraps a weighting: its weights are recomputed on every k-th step and reused between.

    Get one with `balancers.get(name, every=k, ...)`. Navon et al. (Nash-MTL, ICML 2022, §5.2)
    solve their problem only every few steps to save time; this makes that available to every
    balancer whose update is a weighting `w @ J` (MGDA, Nash-MTL, UPGrad, CAGrad, IMTL-G, GradNorm,
    MultiBalance, the loss-level weightings, ...).

    At the gradient levels the saving is real: `schedule` tells the training step, before any
    task gradient is extracted, whether this step recomputes. On reuse steps the step skips the
    per-task gradients altogether and back-propagates `Σ_k w_k L_k` once with `stored_result()`'s
    weights (heads with the stored task weights), as fast as plain training. The wrapped
    balancer's state (EMAs, learned weights) only moves on recompute steps. A step is a recompute
    step when `step % k == 0`, or when no weights were computed yet (a fresh or restored model).
    """

    name_in_registry = "every"
    supported_levels = LEVELS

    def __init__(self, balancer: Balancer | dict, every: int, **kwargs):
        inner = balancer
        if isinstance(inner, dict):
            inner = keras.saving.deserialize_keras_object(inner)
        if not isinstance(inner, Balancer):
            raise TypeError(f"EveryK wraps a Balancer instance, got {balancer!r}; for a name use "
                            "keras_mtl.balancers.get(name, every=k).")
        kwargs.pop("level", None)
        kwargs.setdefault("name", f"{inner.name}_every_{int(every)}")
        super().__init__(level=inner.level, **kwargs)
        if int(every) < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}.")
        if not isinstance(inner, Weighting):
            raise ValueError(
                f"Balancer {inner.name_in_registry!r} is not a weighting (its update is not "
                "w @ J), so its weights cannot be reused between steps; `every` applies to "
                "weightings only."
            )
        if inner.needs_post_step_losses or inner.needs_hessian_term:
            raise ValueError(f"Balancer {inner.name_in_registry!r} needs extra passes on every step; "
                             "`every` cannot skip them.")
        self.inner = inner
        self.every = int(every)

    def build(self, num_tasks, task_names=None, num_segments=None, num_columns=None):
        if not self.inner.built:
            self.inner.build(num_tasks, task_names, num_segments, num_columns)
        super().build(num_tasks, task_names, num_segments, num_columns)

    def build_state(self, num_tasks):
        def state(name, shape=(num_tasks,)):
            return self.add_weight(shape=shape, initializer="ones", trainable=False, name=name)

        self.stored_shared_weights = state("stored_shared_weights")
        self.stored_task_weights = state("stored_task_weights")
        self.computed = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                        name="computed")

    def due(self, step) -> tf.Tensor:
        """True on recompute steps."""
        return tf.equal(tf.math.floormod(tf.cast(step, tf.int64), self.every), 0) | (
            self.computed < 0.5)

    def schedule(self, context: BalanceContext) -> tf.Tensor | None:
        # At the losses level there is no extraction to skip: `balance` selects the weights.
        return None if self.level == "losses" else self.due(context.step)

    def stored_result(self) -> BalanceResult:
        """The stored weights, with every state variable kept as it is."""
        task, shared = tf.identity(self.stored_task_weights), tf.identity(self.stored_shared_weights)
        return BalanceResult(None, task, self._bookkeeping(
            [v.value for v in self.inner.weights], task, shared), shared_weights=shared)

    def reduce(self, gradients, context):
        """A recompute step at a gradient level: the wrapped balancer's result, stored."""
        return self._stored(self.inner.reduce(gradients, context))

    def balance(self, matrix, losses, context):
        # The functional core decides itself (losses level, `aggregate`): recompute or reuse,
        # with the weighted sum taken once in either branch.
        def recompute():
            result = self._stored(self.inner.balance(matrix, losses, context))
            return _flat(result, matrix is not None)

        def reuse():
            result = self.stored_result()
            if matrix is not None:
                result = result._replace(combined=weighted_sum(matrix, result.shared_weights))
            return _flat(result, matrix is not None)

        task, shared, values, *combined = tf.cond(self.due(context.step), recompute, reuse)
        return BalanceResult(combined[0] if combined else None, task,
                             tuple(zip(self._state_variables(), values, strict=True)),
                             shared_weights=shared)

    def _stored(self, result: BalanceResult) -> BalanceResult:
        """`result` with the stored weights' updates; every state variable gets a value."""
        task = tf.cast(result.task_weights, tf.float32)
        shared = tf.cast(result.weights_for_shared, tf.float32)
        new = {id(variable): value for variable, value in result.updates}
        values = [tf.cast(new.get(id(v), v.value), v.dtype) for v in self.inner.weights]
        return result._replace(task_weights=task, shared_weights=shared,
                               updates=self._bookkeeping(values, task, shared))

    def _state_variables(self) -> list:
        return [*self.inner.weights, self.stored_task_weights, self.stored_shared_weights,
                self.computed]

    def _bookkeeping(self, inner_values, task_weights, shared_weights) -> tuple:
        """All state updates of a step: the inner balancer's, then the stored weights."""
        values = [*inner_values, task_weights, shared_weights, tf.constant(1.0)]
        return tuple(zip(self._state_variables(), values, strict=True))

    def get_config(self):
        config = super().get_config()
        config.pop("level", None)
        return {**config, "balancer": keras.saving.serialize_keras_object(self.inner),
                "every": self.every}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _flat(result: BalanceResult, with_combined: bool) -> tuple:
    """A result as `tf.cond` outputs: weights, state values (and the combination)."""
    outputs = (result.task_weights, result.shared_weights, [value for _, value in result.updates])
    return (*outputs, result.combined) if with_combined else outputs
