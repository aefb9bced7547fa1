"""Turning a task's metric specs into named metric objects."""

from __future__ import annotations

import inspect
import re
from typing import Any

import keras

from keras_mtl.metrics.auc import AUC
from keras_mtl.metrics.calibration import PCOC, ExpectedCalibrationError, LogLoss
from keras_mtl.metrics.gauc import GAUC
from keras_mtl.metrics.lifetime_value import DecileMAPE, NormalizedGini
from keras_mtl.metrics.ndcg import GroupNDCG
from keras_mtl.metrics.normalized_entropy import NormalizedEntropy

_NAMED = {
    # NaN, not 0.0, for a task that saw no labelled row (see keras_mtl.metrics.AUC).
    "auc": lambda name: AUC(name=name, num_thresholds=1000),
    "rmse": lambda name: keras.metrics.RootMeanSquaredError(name=name),
    "ne": lambda name: NormalizedEntropy(name=name),
    "logloss": lambda name: LogLoss(name=name),
    "pcoc": lambda name: PCOC(name=name),
    "ece": lambda name: ExpectedCalibrationError(name=name),
    "gini": lambda name: NormalizedGini(name=name),
    "decile_mape": lambda name: DecileMAPE(name=name),
}


def make_metric(spec: Any, prefix: str, task=None) -> keras.metrics.Metric:
    """A fresh metric named `<prefix>_<name>` from a name, a Metric class or a Metric instance.
    `task`: the metric's task, for names whose meaning depends on it (`accuracy` and `top_<k>`
    of a multiclass task, `ndcg_<k>` of a ranking task's groups)."""
    if isinstance(spec, str):
        if spec in _NAMED:
            return _NAMED[spec](f"{prefix}_{spec}")
        by_task = _task_metric(spec, prefix, task)
        if by_task is not None:
            return by_task
        if spec == "gauc":
            raise ValueError(
                f"Task {prefix!r}: GAUC needs to know the user feature; pass "
                "keras_mtl.metrics.GAUC(group_feature='user_id') instead of 'gauc'."
            )
        try:
            obj = keras.metrics.get(spec)
        except ValueError:
            raise ValueError(
                f"Task {prefix!r}: unknown metric {spec!r}; use one of {sorted(_NAMED)}, "
                "'accuracy' / 'top_<k>' (multiclass), 'ndcg_<k>' (ranking), a Keras metric name "
                "or a keras.metrics.Metric instance."
            ) from None
        if inspect.isclass(obj):
            return obj(name=f"{prefix}_{spec}")
        if isinstance(obj, keras.metrics.Metric):
            config = obj.get_config()
            config["name"] = f"{prefix}_{spec}"  # the name the user wrote, e.g. "mae"
            return type(obj).from_config(config)
        return keras.metrics.MeanMetricWrapper(obj, name=f"{prefix}_{spec}")
    if inspect.isclass(spec) and issubclass(spec, keras.metrics.Metric):
        spec = spec()
    if isinstance(spec, keras.metrics.Metric):
        config = spec.get_config()
        config["name"] = f"{prefix}_{spec.name}"
        return type(spec).from_config(config)
    raise TypeError(f"Task {prefix!r}: cannot make a metric from {spec!r}.")


def _task_metric(spec: str, prefix: str, task) -> keras.metrics.Metric | None:
    multiclass = task is not None and task.kind == "multiclass"
    name = f"{prefix}_{spec}"
    if spec == "accuracy" and multiclass:
        return keras.metrics.SparseCategoricalAccuracy(name=name)
    if re.fullmatch(r"top_\d+", spec):
        if not multiclass:
            raise ValueError(f"Task {prefix!r}: {spec!r} (top-k accuracy) is for multiclass tasks.")
        return keras.metrics.SparseTopKCategoricalAccuracy(k=int(spec[4:]), name=name)
    if re.fullmatch(r"ndcg_\d+", spec):
        if task is None or task.group is None:
            raise ValueError(f"Task {prefix!r}: {spec!r} is computed per group; it needs a task "
                             "with group= (a ranking loss), or GroupNDCG(group_feature=...).")
        return GroupNDCG(group_feature=task.group, k=int(spec[5:]), name=name)
    return None


def update_metric(metric: keras.metrics.Metric, labels, predictions, sample_weight,
                  **kwargs) -> None:
    """`metric.update_state` with one row per example. Keras' mean-of-a-function metrics (`mae`,
    `mse`, …) reduce the last axis: given `[batch]` inputs they would reduce the batch to one
    number, and the row weights (the masks of missing labels) would no longer fit; they get
    `[batch, 1]`."""
    if isinstance(metric, keras.metrics.MeanMetricWrapper) and len(predictions.shape) == 1:
        labels, predictions = labels[:, None], predictions[:, None]
    metric.update_state(labels, predictions, sample_weight=sample_weight, **kwargs)


def group_feature_of(metric: keras.metrics.Metric) -> str | None:
    """The feature a grouped metric (GAUC, GroupNDCG) needs, or None."""
    return metric.group_feature if isinstance(metric, GAUC | GroupNDCG) else None
