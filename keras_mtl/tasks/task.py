"""`Task`: what one head of a multi-task model predicts and how it is scored."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from keras_mtl.tasks import kinds
from keras_mtl.tasks.kinds import KINDS, LABEL_TRANSFORMS
from keras_mtl.tasks.ranking import RANKING_LOSSES

_LOSS_ALIASES = {
    "bce": "binary_crossentropy",
    "binary_crossentropy": "binary_crossentropy",
    "mse": "mean_squared_error",
    "mean_squared_error": "mean_squared_error",
}
# Loss names that select the kind's own loss (computed from logits, with the task's options).
_KIND_LOSSES = {"binary": ("binary_crossentropy",), "regression": ("mean_squared_error", "huber")}


@dataclasses.dataclass
class Task:
    """One prediction target.

    Args:
        name: the label's key in the `y` dict and the prefix of its logs (`<name>_loss`, …).
        kind: what the label is and what the head predicts (see `keras_mtl.tasks.kinds`):
            - `"binary"`: 0/1; σ(z), a probability; cross-entropy.
            - `"regression"`: a number; z (or `expm1(z)` with `label_transform="log1p"`); squared
              error (or Huber).
            - `"multiclass"`: a class index 0 … `num_classes − 1` (a 1–5 rating minus 1, a reason
              code); softmax probabilities `[batch, num_classes]`; softmax cross-entropy.
            - `"poisson"`, `"tweedie"`: a count / amount >= 0 (Tweedie: zeros plus a positive
              continuous part, power `tweedie_power` in (1, 2)); e^z, the expected value.
            - `"watch_time"`: seconds >= 0 (0: not watched); weighted logistic regression
              (Covington et al., RecSys'16), e^z estimates the expected watch time.
            - `"ziln"`: a lifetime value >= 0; zero-inflated log-normal (Wang et al. 2019), three
              logits, prediction p·exp(μ + σ²/2).
        loss: `None` for the kind's own loss (from logits, with the options below); for binary
            `"bce"`, for regression `"mse"` or `"huber"` say the same explicitly; a ranking loss
            (`"pairwise_logistic"`, `"listmle"`, with `group`); otherwise a Keras loss name or a
            `keras.losses.Loss` instance, called per row on the prediction (the probability for
            binary tasks; the task's options do not apply to it).
        metrics: metric names (`"auc"`, `"ne"`, `"logloss"`, `"pcoc"`, `"ece"`, `"rmse"`, `"mae"`,
            `"accuracy"`, `"top_<k>"`, `"gini"`, `"decile_mape"`, `"ndcg_<k>"`, any
            `keras.metrics.get` name) or `keras.metrics.Metric` instances; `None` for the kind's
            defaults (`keras_mtl.tasks.kinds.default_metrics`: binary `auc`, `ne`, `logloss`,
            `pcoc`, `ece`; regression `rmse`; counts and watch time `rmse`, `pcoc`; multiclass
            `accuracy`, `top_2`; ZILN `gini`, `decile_mape`, `pcoc`; ranking `ndcg_10`).
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
        counterfactual: ESMM tasks only: `"ips"` or `"dr"` adds ESCM²'s counterfactual risk
            regulariser on the CVR head (Wang et al., SIGIR'22; `models.losses.counterfactual_risk`):
            the CVR cross-entropy on the parent's positive rows weighted by the inverse propensity
            1/pCTR (IPS), or the doubly robust form with an imputation tower that predicts that
            error (DR). The task's loss becomes `L_CTCVR + counterfactual_weight · R`.
        counterfactual_weight: λ_c >= 0, the regulariser's weight relative to the CTCVR loss.
        num_classes: multiclass only: the number of classes (>= 2).
        pos_weight: binary only: the weight of a positive row's loss (`class_weight={1: a}` per
            task; > 1 for rare positives).
        focal_gamma: binary only: the focal loss' γ >= 0 (Lin et al., ICCV'17; 0: cross-entropy).
        label_smoothing: binary only: ε in [0, 1): labels become y(1 − ε) + ε/2.
        huber_delta: regression with `loss="huber"`: the Huber threshold δ > 0.
        label_transform: regression only: `"log1p"` trains on log(1 + label) and predicts
            `expm1` of the head (in the label's units, for metrics, `predict` and serving): raw
            seconds or amounts then make a well-scaled task instead of one whose gradient norm
            dominates every balancer.
        label_scale: amount kinds (regression, poisson, tweedie, watch_time, ziln): the loss sees
            label / s and the prediction is s times the head's, in the label's units. Choose s
            near a typical non-zero label (mean seconds watched): a loss proportional to raw
            seconds has gradients hundreds of times a click's, which equal weighting then
            follows. It changes the loss' scale, not what is estimated.
        tweedie_power: tweedie only: the power p in (1, 2).
        group: with a ranking loss: the feature whose value identifies a row's request / user;
            pairs and lists form among a batch's rows of one group (`keras_mtl.tasks.ranking`).

    A missing label is **masked**, never treated as a negative: the row adds nothing to this task's
    loss, gradient or metrics. The task loss is the (sample-weighted) mean over its valid rows (a
    ranking loss: over the batch's groups); a batch with no valid row contributes exactly 0.
    """

    name: str
    kind: str = "binary"
    loss: Any = None
    metrics: Sequence[Any] | None = None
    weight: float = 1.0
    sample_space: str | None = None
    missing_value: float | None = None
    esmm_parent: str | None = None
    num_classes: int | None = None
    pos_weight: float = 1.0
    focal_gamma: float = 0.0
    label_smoothing: float = 0.0
    huber_delta: float = 1.0
    label_transform: str | None = None
    label_scale: float = 1.0
    tweedie_power: float = 1.5
    group: str | None = None
    counterfactual: str | None = None
    counterfactual_weight: float = 0.1

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
        self._check_options()
        if self.esmm_parent is not None:
            if self.kind != "binary":
                raise ValueError(f"Task {self.name!r}: an ESMM task must be binary.")
            if self.sample_space is not None:
                raise ValueError(
                    f"Task {self.name!r}: esmm_parent and sample_space are two answers to the same "
                    "problem (sample selection bias); use one."
                )
            changed = [o for o in ("pos_weight", "focal_gamma", "label_smoothing", "group")
                       if getattr(self, o) != _DEFAULTS[o]]
            if changed or self.loss is not None:
                raise ValueError(f"Task {self.name!r}: an ESMM task is trained with the "
                                 f"entire-space cross-entropy; {changed or ['loss']} cannot apply.")
        if self.counterfactual is not None:
            if self.esmm_parent is None:
                raise ValueError(f"Task {self.name!r}: counterfactual= regularises an ESMM task's "
                                 "CVR head (ESCM²); set esmm_parent= too.")
            if self.counterfactual not in COUNTERFACTUALS:
                raise ValueError(f"Task {self.name!r}: counterfactual must be one of "
                                 f"{COUNTERFACTUALS}; got {self.counterfactual!r}.")
        elif self.counterfactual_weight != _DEFAULTS["counterfactual_weight"]:
            raise ValueError(f"Task {self.name!r}: counterfactual_weight applies with "
                             "counterfactual='ips' or 'dr'.")
        w = self.counterfactual_weight
        if not (isinstance(w, int | float) and math.isfinite(w) and w >= 0):
            raise ValueError(f"Task {self.name!r}: counterfactual_weight must be a finite number "
                             f">= 0; got {w!r}.")
        if isinstance(self.loss, str):
            self._check_loss_name(self.loss)

    def _check_options(self) -> None:
        """Each option belongs to some kinds; a value set for another kind is an error."""
        own = {"num_classes": ("multiclass",), "pos_weight": ("binary",),
               "focal_gamma": ("binary",), "label_smoothing": ("binary",),
               "label_transform": ("regression",), "tweedie_power": ("tweedie",),
               "huber_delta": ("regression",), "label_scale": kinds.SCALED}
        for option, kinds_of in own.items():
            if self.kind not in kinds_of and getattr(self, option) != _DEFAULTS[option]:
                raise ValueError(f"Task {self.name!r}: {option} applies to "
                                 f"{' / '.join(kinds_of)} tasks; this task is {self.kind!r}.")
        if self.kind == "multiclass" and not (isinstance(self.num_classes, int)
                                              and self.num_classes >= 2):
            raise ValueError(f"Task {self.name!r}: a multiclass task needs num_classes, an "
                             f"integer >= 2; got {self.num_classes!r}.")

        def check(option, valid, expected):
            value = getattr(self, option)
            if not (isinstance(value, int | float) and math.isfinite(value) and valid(value)):
                raise ValueError(f"Task {self.name!r}: {option} must be {expected}; got {value!r}.")

        check("pos_weight", lambda v: v > 0, "a number > 0")
        check("focal_gamma", lambda v: v >= 0, "a number >= 0")
        check("label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)")
        check("huber_delta", lambda v: v > 0, "a number > 0")
        check("label_scale", lambda v: v > 0, "a number > 0")
        check("tweedie_power", lambda v: 1 < v < 2, "in (1, 2) (compound Poisson-gamma)")
        if self.label_transform not in (None, *LABEL_TRANSFORMS):
            raise ValueError(f"Task {self.name!r}: label_transform must be None or one of "
                             f"{LABEL_TRANSFORMS}; got {self.label_transform!r}.")
        if self.huber_delta != _DEFAULTS["huber_delta"] and self.loss != "huber":
            raise ValueError(f"Task {self.name!r}: huber_delta applies with loss='huber'.")
        ranking = self.loss in RANKING_LOSSES
        if ranking and self.kind not in ("binary", "regression"):
            raise ValueError(f"Task {self.name!r}: a ranking loss ranks binary or graded "
                             f"(regression) labels; this task is {self.kind!r}.")
        if ranking and not self.group:
            raise ValueError(f"Task {self.name!r}: loss {self.loss!r} ranks rows within groups; "
                             "name the feature that identifies a row's request or user: group=...")
        if self.group is not None and not ranking:
            raise ValueError(f"Task {self.name!r}: group= is read by a ranking loss "
                             f"({RANKING_LOSSES}); this task's loss is {self.loss!r}.")
        if self.loss == "huber" and self.kind != "regression":
            raise ValueError(f"Task {self.name!r}: loss 'huber' is for regression tasks.")

    def _check_loss_name(self, name: str) -> None:
        if name in _LOSS_ALIASES or name in RANKING_LOSSES or name == "huber":
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
    @property
    def num_outputs(self) -> int:
        """Logits per row (`kinds.num_outputs`)."""
        return kinds.num_outputs(self)

    @property
    def ranking_loss(self) -> str | None:
        """The ranking loss' name, or None for a per-row loss."""
        return self.loss if self.loss in RANKING_LOSSES else None

    def predict(self, logits: tf.Tensor) -> tf.Tensor:
        """The prediction from the head's logits (`kinds.predict`)."""
        return kinds.predict(self, logits)

    activation = predict  # the name before the kinds had links other than sigmoid and identity

    def per_example_loss(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """Per-row loss `[batch]` from clean labels (missing ones already replaced) and logits."""
        name = _LOSS_ALIASES.get(self.loss, self.loss) if isinstance(self.loss, str) else self.loss
        if name is None or name in _KIND_LOSSES.get(self.kind, ()):
            return kinds.per_example_loss(self, labels, logits)
        predictions = self.predict(logits)
        if predictions.shape.rank == 1:
            predictions = predictions[:, None]
        if isinstance(name, keras.losses.Loss):
            loss = name.call(labels[:, None], predictions)
        else:
            loss = keras.losses.get(name)(labels[:, None], predictions)
        return tf.reshape(tf.cast(loss, tf.float32), [-1])

    # ----------------------------------------------------------------------------------- metrics
    def build_metrics(self) -> list[keras.metrics.Metric]:
        """Fresh metric objects named `<task>_<metric>` for this task."""
        from keras_mtl.metrics import make_metric

        specs = kinds.default_metrics(self) if self.metrics is None else self.metrics
        return [make_metric(spec, prefix=self.name, task=self) for spec in specs]

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
            **{option: getattr(self, option) for option in _OPTIONS},
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


_OPTIONS = ("num_classes", "pos_weight", "focal_gamma", "label_smoothing", "huber_delta",
            "label_transform", "label_scale", "tweedie_power", "group", "counterfactual",
            "counterfactual_weight")
# ESCM²'s two estimators of the CVR risk over the entire space (`models.losses`).
COUNTERFACTUALS = ("ips", "dr")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Task)}


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
