"""Replicas and loss scaling: what a task gradient goes through between autodiff and a balancer.

A balancer always sees the global batch's task gradients, float32 and unscaled. Under a
`tf.distribute` strategy with several replicas they are gathered (representation level) or summed
(parameter level) across replicas; under `mixed_float16` the loss scale is divided out on the way
to the balancer and restored on the way back into autodiff.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_mtl.gradients.blocks import OuterProductBlock


def replica_context():
    """`(replica context, number of replicas)` inside a step that runs on several replicas of a
    `tf.distribute` strategy; `(None, 1)` otherwise (no strategy, one replica, cross-replica)."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None, 1
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return None, 1
    return replica, replica.num_replicas_in_sync


def global_sum(values: tf.Tensor) -> tf.Tensor:
    """`values` summed over the replicas (themselves when alone), as constants for autodiff."""
    replica, _ = replica_context()
    if replica is None:
        return values
    return replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(values))


def row_offset(replica, tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Where this replica's rows start in the replica-ordered global batch, and how many."""
    rows = tf.shape(tensor)[0]
    sizes = replica.all_gather(rows[None], axis=0)
    replica_id = tf.cast(replica.replica_id_in_sync_group, tf.int32)
    return tf.reduce_sum(sizes[:replica_id]), rows


def loss_scale(optimizer) -> tf.Tensor | None:
    """A loss-scale optimizer's current scale (mixed_float16), else None."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(optimizer.dynamic_scale, tf.float32)
    return None


def unscaled(gradient, scale) -> tf.Tensor:
    """A gradient as a balancer sees it: float32, loss scale divided out."""
    gradient = tf.cast(gradient, tf.float32)
    return gradient if scale is None else gradient / scale


def unscaled_block(block, scale):
    """`unscaled` on a cut-gradient block (None stays None; a factored block's gradient factor
    is unscaled)."""
    if block is None:
        return None
    if isinstance(block, OuterProductBlock):
        return block.map(lambda g: unscaled(g, scale))
    return unscaled(block, scale)


def rescaled(gradient, scale, dtype) -> tf.Tensor:
    """A balanced gradient on its way back into autodiff: loss scale restored, compute dtype."""
    if scale is not None:
        gradient = gradient * scale
    return tf.cast(gradient, dtype)
