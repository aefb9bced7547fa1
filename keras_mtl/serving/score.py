"""The ranking score: PLE's fusion of task predictions and feature terms."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

TRANSFORMS = ("identity", "log1p", "power", "clip")


@dataclasses.dataclass(frozen=True)
class FeatureTransform:
    """One factor `f_j(x_j)` of the score, computed from a raw numeric feature.

    kinds: `identity` (x), `log1p` (log(1 + max(x, 0))), `power` (max(x, 0)^exponent),
    `clip` (x clipped to [low, high]). A feature the model does not use becomes an extra float32
    input of the serving signature (e.g. a video length known only at serving time).
    """

    feature: str
    kind: str = "identity"
    exponent: float = 1.0
    low: float | None = None
    high: float | None = None

    def __post_init__(self):
        if self.kind not in TRANSFORMS:
            raise ValueError(
                f"Transform of {self.feature!r}: kind must be one of {TRANSFORMS}, got {self.kind!r}."
            )
        if self.kind == "clip" and self.low is None and self.high is None:
            raise ValueError(f"Transform of {self.feature!r}: clip needs low and/or high.")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, tf.float32)
        if self.kind == "log1p":
            return tf.math.log1p(tf.maximum(x, 0.0))
        if self.kind == "power":
            return tf.pow(tf.maximum(x, 0.0), self.exponent)
        if self.kind == "clip":
            low = -float("inf") if self.low is None else self.low
            high = float("inf") if self.high is None else self.high
            return tf.clip_by_value(x, low, high)
        return x


@dataclasses.dataclass
class ScoreSpec:
    """`score = Π_k v_k^{w_k} · Π_j f_j(x_j)` (Tang et al., PLE, RecSys 2020, §5.3.1), v_k task k's
    served value (`served_values`):

    - binary: the probability; poisson / tweedie / watch_time / ziln: the expected value (count,
      amount, seconds, lifetime value); regression: the prediction (in label units);
    - multiclass: the probability of class `classes[task]`, or, without a chosen class, the
      expected class index Σ_c c·p_c (e.g. the expected rating − 1 of a 1–5 rating).

    Args:
        exponents: `w_k` per task name. Tasks left out get 1 if binary and 0 otherwise (a
            regression output may be negative, and a negative base has no real power; an amount
            is on another scale than a probability, so counting it is a choice). Values are
            floored at `floor` before the power so that a zero never turns a product into NaN.
        transforms: the feature factors `f_j`.
        classes: for multiclass tasks, the class whose probability is the served value.
    """

    exponents: Mapping[str, float] = dataclasses.field(default_factory=dict)
    transforms: Sequence[FeatureTransform] = ()
    floor: float = 1e-7
    classes: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def resolved_exponents(self, tasks) -> list[float]:
        names = [t.name for t in tasks]
        unknown = sorted(set(self.exponents) - set(names))
        if unknown:
            raise ValueError(f"Score exponents for unknown task(s) {unknown}; tasks: {names}.")
        by_name = {t.name: t for t in tasks}
        for name, index in self.classes.items():
            task = by_name.get(name)
            if task is None or task.kind != "multiclass":
                raise ValueError(f"Score classes name {name!r}, which is not a multiclass task "
                                 f"of the model (tasks: {names}).")
            if not (isinstance(index, int) and 0 <= index < task.num_classes):
                raise ValueError(f"Score class of task {name!r} must be an integer in "
                                 f"[0, {task.num_classes}); got {index!r}.")
        return [float(self.exponents.get(t.name, 1.0 if t.kind == "binary" else 0.0))
                for t in tasks]

    def served_values(self, tasks, outputs: Mapping[str, tf.Tensor]) -> list[tf.Tensor]:
        """Each task's `[B]` served value (see the class docstring) from the model's outputs."""
        values = []
        for task in tasks:
            output = tf.cast(outputs[task.name], tf.float32)
            if task.kind == "multiclass":
                if task.name in self.classes:
                    output = output[:, self.classes[task.name]]
                else:
                    output = tf.linalg.matvec(output, tf.range(task.num_classes, dtype=tf.float32))
            values.append(output)
        return values

    def score(self, predictions: list[tf.Tensor], exponents: tf.Tensor,
              features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """`predictions[k]`: `[B]`; `exponents`: `[K]` or `[B, K]` (per request or per row)."""
        stacked = tf.maximum(tf.stack(predictions, axis=1), self.floor)  # [B, K]
        powered = tf.pow(stacked, tf.cast(exponents, tf.float32))
        # A zero exponent means "this task does not count": pow(x, 0) is 1 for every x >= floor.
        score = tf.reduce_prod(powered, axis=1)
        for transform in self.transforms:
            score *= transform(features[transform.feature])
        return score

    def get_config(self) -> dict[str, Any]:
        return {"exponents": dict(self.exponents),
                "transforms": [dataclasses.asdict(t) for t in self.transforms],
                "floor": self.floor, "classes": dict(self.classes)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ScoreSpec:
        return cls(exponents=dict(config.get("exponents", {})),
                   transforms=[FeatureTransform(**t) for t in config.get("transforms", [])],
                   floor=config.get("floor", 1e-7), classes=dict(config.get("classes", {})))
