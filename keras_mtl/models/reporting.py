"""What a step reports: the running loss, each task's loss and metrics, the balancer's weights."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_mtl.features.lookups import row_key
from keras_mtl.metrics import group_feature_of, update_metric
from keras_mtl.models.guard import StepCounters
from keras_mtl.models.losses import TaskLosses
from keras_mtl.tasks import Task


class StepMetrics:
    """The model's metrics and how one step updates them.

    Logs: `loss` (Σ_k weight_k·L_k as equal weighting would train it, comparable across
    balancers), `<task>_loss` (the task's mean loss over its valid rows) and `<task>_<metric>`,
    NaN for a task without labelled rows (Keras' metrics report 0 with no data, `AUC 0.0`, which
    reads as a result); in training also the skip totals of `StepCounters` and `<task>_weight`,
    the balancer's weight of each task (its shared weights, else its task weights), averaged over
    the epoch's finite steps where the task had rows (a loss-ratio method's weight of a task
    without rows is ~1/0).
    """

    def __init__(self, tasks: Sequence[Task], counters: StepCounters):
        self.tasks = list(tasks)
        self.factors = [float(t.weight) for t in self.tasks]
        self.counters = counters
        self.loss = keras.metrics.Mean(name="loss")
        self.task_losses = [keras.metrics.Mean(name=f"{t.name}_loss") for t in self.tasks]
        self.task_metrics = [t.build_metrics() for t in self.tasks]
        self.balance_weights = [keras.metrics.Mean(name=f"{t.name}_weight") for t in self.tasks]

    @property
    def metrics(self) -> list:
        """Every metric, for Keras to reset at epoch and evaluation starts."""
        return [self.loss, *self.task_losses, *[m for ms in self.task_metrics for m in ms],
                *self.balance_weights, self.counters]

    def update(self, x, losses, terms: TaskLosses, logits, finite, balance_weights=None) -> None:
        """One step's update; a skipped (non-finite) step must not poison the running means."""
        keep = tf.cast(finite, tf.float32)
        safe_losses = tf.where(finite, losses, 0.0)
        self.loss.update_state(tf.reduce_sum(tf.constant(self.factors) * safe_losses),
                               sample_weight=keep)
        labelled, has_rows = [], []
        metric_weights = terms.metric_weights(self.tasks)
        for k, task in enumerate(self.tasks):
            row_weight, metric_weight = terms.row_weights[k], metric_weights[k]
            labelled.append(tf.reduce_sum(metric_weight) * keep)
            has_rows.append(tf.cast(tf.reduce_sum(row_weight) > 0, tf.float32))
            self.task_losses[k].update_state(safe_losses[k], sample_weight=keep * has_rows[k])
            predictions = task.predict(logits[k])
            predictions = tf.where(tf.math.is_finite(predictions), predictions, 0.0)
            for metric in self.task_metrics[k]:
                update_metric(metric, terms.labels[task.name], predictions,
                              metric_weight * keep, **_groups(metric, x))
        self.counters.count_rows(tf.stack(labelled))
        if balance_weights is not None:
            weights = tf.where(finite, tf.cast(balance_weights, tf.float32), 0.0)
            for tracker, weight, rows in zip(self.balance_weights, tf.unstack(weights), has_rows,
                                             strict=True):
                tracker.update_state(weight, sample_weight=keep * rows)

    def logs(self) -> dict:
        """The running loss, task losses and task metrics (NaN for a task without rows)."""
        logs = {self.loss.name: self.loss.result()}
        rows = tf.unstack(self.counters.labelled_rows)
        for k, tracker in enumerate(self.task_losses):
            logs[tracker.name] = _mean_or_nan(tracker)
            for metric in self.task_metrics[k]:
                value = metric.result()
                logs[metric.name] = tf.where(rows[k] > 0, value, tf.cast(float("nan"), value.dtype))
        return logs

    def train_logs(self) -> dict:
        """`logs` plus the training-only entries: skip totals and balancer weights."""
        logs = {**self.logs(), **self.counters.logs()}
        for tracker in self.balance_weights:
            logs[tracker.name] = _mean_or_nan(tracker)
        return logs


def _groups(metric, x) -> dict:
    """`groups=` for a metric that groups rows by a feature (GAUC), else nothing."""
    group = group_feature_of(metric)
    if group is None:
        return {}
    if group not in x and row_key(group) in x:
        # Looked up in the input pipeline: its table rows identify the groups as well (a
        # categorical's out-of-vocabulary values share one row, so they form one group), and
        # unlike a hash of the strings they compile with XLA.
        return {"groups": x[row_key(group)]}
    if group not in x:
        raise KeyError(f"Metric {metric.name!r} groups rows by feature {group!r}, which is not in "
                       f"the inputs {sorted(x)}.")
    return {"groups": x[group]}


def _mean_or_nan(tracker: keras.metrics.Mean) -> tf.Tensor:
    """A running mean, NaN while it has no weight (Keras' Mean says 0)."""
    return tf.where(tracker.count > 0, tracker.result(), float("nan"))
