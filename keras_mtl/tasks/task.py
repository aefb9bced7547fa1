"""`Task`: what one head of a multi-task model predicts and how it is scored."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

KINDS = ("binary", "regression")

_LOSS_ALIASES = {
    "bce": "binary_crossentropy",
    "binary_crossentropy": "binary_crossentropy",
    "mse": "mean_squared_error",
    "mean_squared_error": "mean_squared_error",
}


@dataclasses.dataclass
class Task:
    """One prediction target.

    Args:
        name: the label's key in the `y` dict and the prefix of its logs (`<name>_loss`, …).
        kind: `"binary"` (sigmoid output, probability) or `"regression"` (linear output).
        loss: `None` for the kind's default (binary: sigmoid cross-entropy computed from logits;
            regression: squared error), a Keras loss name, or a `keras.losses.Loss` instance
            (called per example on the prediction, i.e. the probability for binary tasks).
        metrics: metric names (`"auc"`, `"rmse"`, `"ne"`, `"mae"`, any `keras.metrics.get` name) or
            `keras.metrics.Metric` instances; `None` for the default (`auc` + `ne` for binary,
            `rmse` for regression).
        weight: a fixed factor on this task's loss everywhere it is used, balancers included.
        sample_space: name of another binary task; this task's loss and metrics only count rows
            where that task's label is 1 (PLE eq. 9: e.g. conversion is trained on clicked rows).
        missing_value: a sentinel that marks a missing label in addition to NaN (e.g. -1).
        esmm_parent: name of a binary task (e.g. `"click"`) this one is conditional on, trained the
            ESMM way (Ma et al., SIGIR 2018): the head predicts pCVR = p(task | parent), and the
            loss is the cross-entropy of pCTCVR = pCTR · pCVR against `parent ∧ task` over *every*
            row with a parent label (the entire impression space), so the CVR head is never
            trained on clicked rows alone. The model also outputs `<name>_ctcvr`; this task's
            metrics score pCVR on the parent's positive rows. An alternative to `sample_space`.

    A missing label is **masked**, never treated as a negative: the row adds nothing to this task's
    loss, gradient or metrics. The task loss is the (sample-weighted) mean over its valid rows; a
    batch with no valid row contributes exactly 0.
    """

    name: str
    kind: str = "binary"
    loss: Any = None
    metrics: Sequence[Any] | None = None
    weight: float = 1.0
    sample_space: str | None = None
    missing_value: float | None = None
    esmm_parent: str | None = None

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"A task needs a non-empty string name, got {self.name!r}.")
        if self.kind not in KINDS:
            raise ValueError(f"Task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}.")
        if not (isinstance(self.weight, int | float) and math.isfinite(self.weight)
                and self.weight >= 0):
            raise ValueError(
                f"Task {self.name!r}: weight must be a finite number >= 0, got {self.weight!r}."
            )
        if self.sample_space == self.name or self.esmm_parent == self.name:
            raise ValueError(f"Task {self.name!r} cannot condition on itself.")
        if self.esmm_parent is not None:
            if self.kind != "binary":
                raise ValueError(f"Task {self.name!r}: an ESMM task must be binary.")
            if self.sample_space is not None:
                raise ValueError(
                    f"Task {self.name!r}: esmm_parent and sample_space are two answers to the same "
                    "problem (sample selection bias); use one."
                )
        if isinstance(self.loss, str):
            self._check_loss_name(self.loss)

    def _check_loss_name(self, name: str) -> None:
        if name in _LOSS_ALIASES:
            return
        try:
            keras.losses.get(name)
        except ValueError:
            raise ValueError(f"Task {self.name!r}: unknown loss {name!r}.") from None

    # ----------------------------------------------------------------------------------- labels
    def present_mask(self, labels: tf.Tensor) -> tf.Tensor:
        """Boolean `[batch]`: True where the label exists (not NaN, not the sentinel)."""
        present = tf.logical_not(tf.math.is_nan(labels))
        if self.missing_value is not None:
            present &= tf.not_equal(labels, tf.cast(self.missing_value, labels.dtype))
        return present

    # ----------------------------------------------------------------------------------- outputs
    def activation(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(logits) if self.kind == "binary" else logits

    def per_example_loss(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """Per-row loss `[batch]` from clean labels (missing ones already replaced) and logits."""
        name = _LOSS_ALIASES.get(self.loss, self.loss) if isinstance(self.loss, str) else self.loss
        if name is None:
            name = "binary_crossentropy" if self.kind == "binary" else "mean_squared_error"
        if name == "binary_crossentropy" and self.kind == "binary":
            # From logits: stable where the probability saturates.
            return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        if name == "mean_squared_error":
            return tf.square(self.activation(logits) - labels)
        predictions = self.activation(logits)[:, None]
        if isinstance(name, keras.losses.Loss):
            loss = name.call(labels[:, None], predictions)
        else:
            loss = keras.losses.get(name)(labels[:, None], predictions)
        return tf.reshape(tf.cast(loss, tf.float32), [-1])

    # ----------------------------------------------------------------------------------- metrics
    def build_metrics(self) -> list[keras.metrics.Metric]:
        """Fresh metric objects named `<task>_<metric>` for this task."""
        from keras_mtl.metrics import make_metric

        specs = self.metrics
        if specs is None:
            specs = ["auc", "ne"] if self.kind == "binary" else ["rmse"]
        return [make_metric(spec, prefix=self.name) for spec in specs]

    # ----------------------------------------------------------------------------------- config
    def get_config(self) -> dict[str, Any]:
        def serialize(obj):
            if obj is None or isinstance(obj, str):
                return obj
            return keras.saving.serialize_keras_object(obj)

        return {
            "name": self.name,
            "kind": self.kind,
            "loss": serialize(self.loss),
            "metrics": None if self.metrics is None else [serialize(m) for m in self.metrics],
            "weight": self.weight,
            "sample_space": self.sample_space,
            "missing_value": self.missing_value,
            "esmm_parent": self.esmm_parent,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Task:
        config = dict(config)

        def deserialize(obj):
            if obj is None or isinstance(obj, str):
                return obj
            return keras.saving.deserialize_keras_object(obj)

        config["loss"] = deserialize(config.get("loss"))
        if config.get("metrics") is not None:
            config["metrics"] = [deserialize(m) for m in config["metrics"]]
        return cls(**config)


def validate_tasks(tasks: Sequence[Task]) -> list[Task]:
    """Checks names are unique and every `sample_space` names a binary task of the model."""
    tasks = [Task.from_config(t) if isinstance(t, dict) else t for t in tasks]
    if not tasks:
        raise ValueError("A multi-task model needs at least one Task.")
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"Task names must be unique; repeated: {repeated}.")
    by_name = {t.name: t for t in tasks}
    for task in tasks:
        for argument in ("sample_space", "esmm_parent"):
            other_name = getattr(task, argument)
            if other_name is None:
                continue
            other = by_name.get(other_name)
            if other is None:
                raise ValueError(
                    f"Task {task.name!r} has {argument}={other_name!r}, which is not a task of "
                    f"this model (tasks: {names})."
                )
            if other.kind != "binary":
                raise ValueError(
                    f"Task {task.name!r}: {argument} {other.name!r} must be a binary task, "
                    f"it is {other.kind!r}."
                )
            if argument == "esmm_parent" and other.esmm_parent is not None:
                raise ValueError(f"Task {task.name!r}: ESMM parent {other.name!r} is itself an "
                                 "ESMM task; chains are not supported.")
    return tasks
