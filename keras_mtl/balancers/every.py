"""Recompute a weighting's weights every k steps only (Nash-MTL's `update_weights_every`, for all)."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_mtl.balancers.base import LEVELS, Balancer, BalanceResult
from keras_mtl.balancers.ops import weighted_sum


@keras.saving.register_keras_serializable(package="keras_mtl")
class EveryK(Balancer):
    """Wraps a weighting balancer: its weights are recomputed on every k-th step and reused between.

    Get one with `balancers.get(name, every=k, ...)`. Navon et al. (Nash-MTL, ICML 2022, §5.2)
    solve their problem only every few steps to save time; this makes that available to every
    balancer whose update is a weighting `w @ J` (MGDA, Nash-MTL, UPGrad, CAGrad, IMTL-G, GradNorm,
    MultiBalance, the loss-level weightings, ...).

    In `MultiTaskModel` the saving is real at the gradient levels: on a reuse step the model skips
    the per-task gradients altogether and back-propagates `Σ_k w_k L_k` once with the stored
    weights (heads with the stored task weights), as fast as plain training. The wrapped
    balancer's state (EMAs, learned weights) only moves on recompute steps. A step is a recompute
    step when `step % k == 0`, or when no weights were computed yet (a fresh or restored model).
    """

    name_in_registry = "every"
    supported_levels = LEVELS

    def __init__(self, balancer, every: int, **kwargs):
        from keras_mtl.balancers.registry import get

        inner = get(balancer)
        kwargs.pop("level", None)
        kwargs.setdefault("name", f"{inner.name}_every_{int(every)}")
        super().__init__(level=inner.level, **kwargs)
        if int(every) < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}.")
        if not inner.is_weighting:
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

    is_weighting = True

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
        return tf.equal(tf.math.floormod(tf.cast(step, tf.int64), self.every), 0) | (
            self.computed < 0.5)

    def stored(self) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.identity(self.stored_task_weights), tf.identity(self.stored_shared_weights)

    def with_bookkeeping(self, inner_values, task_weights, shared_weights) -> tuple:
        """All state updates of a step: the inner balancer's, then the stored weights."""
        return (*zip(self.inner.weights, inner_values, strict=True),
                (self.stored_task_weights, task_weights),
                (self.stored_shared_weights, shared_weights), (self.computed, 1.0))

    def inner_values(self, updates) -> list:
        """The inner balancer's state after `updates` (current values where not updated)."""
        new = {id(variable): value for variable, value in updates}
        return [tf.cast(new.get(id(v), v.value), v.dtype) for v in self.inner.weights]

    def balance(self, matrix, losses, context):
        # Weighted sum once: the inner balancer's own on recompute steps, the stored weights' else.
        def recompute():
            result = self.inner.balance(matrix, losses, context)
            shared = (result.task_weights if result.shared_weights is None
                      else result.shared_weights)
            outputs = (tf.cast(result.task_weights, tf.float32), tf.cast(shared, tf.float32),
                       self.inner_values(result.updates))
            return outputs if matrix is None else (*outputs, result.combined)

        def reuse():
            task, shared = self.stored()
            outputs = (task, shared, [v.value for v in self.inner.weights])
            return outputs if matrix is None else (*outputs, weighted_sum(matrix, shared))

        task, shared, values, *combined = tf.cond(self.due(context.step), recompute, reuse)
        return BalanceResult(combined[0] if combined else None, task,
                             self.with_bookkeeping(values, task, shared), shared_weights=shared)

    def get_config(self):
        config = super().get_config()
        config.pop("level", None)
        return {**config, "balancer": keras.saving.serialize_keras_object(self.inner),
                "every": self.every}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["balancer"] = keras.saving.deserialize_keras_object(config["balancer"])
        return cls(**config)
