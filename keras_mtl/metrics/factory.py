"""Turning a task's metric specs into named metric objects."""

from __future__ import annotations

import inspect
from typing import Any

import keras

from keras_mtl.metrics.auc import AUC
from keras_mtl.metrics.gauc import GAUC
from keras_mtl.metrics.normalized_entropy import NormalizedEntropy

_NAMED = {
    # NaN, not 0.0, for a task that saw no labelled row (see keras_mtl.metrics.AUC).
    "auc": lambda name: AUC(name=name, num_thresholds=1000),
    "rmse": lambda name: keras.metrics.RootMeanSquaredError(name=name),
    "ne": lambda name: NormalizedEntropy(name=name),
}


def make_metric(spec: Any, prefix: str) -> keras.metrics.Metric:
    """A fresh metric named `<prefix>_<name>` from a name, a Metric class or a Metric instance."""
    if isinstance(spec, str):
        if spec in _NAMED:
            return _NAMED[spec](f"{prefix}_{spec}")
        if spec == "gauc":
            raise ValueError(
                f"Task {prefix!r}: GAUC needs to know the user feature; pass "
                "keras_mtl.metrics.GAUC(group_feature='user_id') instead of 'gauc'."
            )
        try:
            obj = keras.metrics.get(spec)
        except ValueError:
            raise ValueError(
                f"Task {prefix!r}: unknown metric {spec!r}; use 'auc', 'rmse', 'ne', a Keras "
                "metric name or a keras.metrics.Metric instance."
            ) from None
        if inspect.isclass(obj):
            return obj(name=f"{prefix}_{spec}")
        if isinstance(obj, keras.metrics.Metric):
            config = obj.get_config()
            config["name"] = f"{prefix}_{spec}"  # the name the user wrote, e.g. "mae"
            return type(obj).from_config(config)
        else:
            return keras.metrics.MeanMetricWrapper(obj, name=f"{prefix}_{spec}")
    if inspect.isclass(spec) and issubclass(spec, keras.metrics.Metric):
        spec = spec()
    if isinstance(spec, keras.metrics.Metric):
        config = spec.get_config()
        config["name"] = f"{prefix}_{spec.name}"
        return type(spec).from_config(config)
    raise TypeError(f"Task {prefix!r}: cannot make a metric from {spec!r}.")


def group_feature_of(metric: keras.metrics.Metric) -> str | None:
    """The feature a grouped metric (GAUC) needs, or None."""
    return metric.group_feature if isinstance(metric, GAUC) else None
