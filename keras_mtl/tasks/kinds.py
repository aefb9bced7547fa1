"""What a task's kind decides: its output width, its link from logits to prediction, its loss, which
labels it accepts and the metrics it reports by default.

Each kind's loss is a per-row negative log-likelihood (up to constants that do not depend on the
model) of the distribution its prediction is the mean of, computed from logits in log space so it
stays finite where the prediction saturates. The task options (`Task.pos_weight`, `focal_gamma`,
`label_smoothing`, `huber_delta`, `label_transform`, `label_scale`, `tweedie_power`,
`num_classes`) are read from the task.
"""

from __future__ import annotations

import math

import tensorflow as tf

# Kinds whose prediction is an expected non-negative amount: their labels must be >= 0.
NON_NEGATIVE = ("poisson", "tweedie", "watch_time", "ziln")
KINDS = ("binary", "regression", "multiclass", *NON_NEGATIVE)
# Kinds whose labels are amounts in some unit, which `label_scale` changes.
SCALED = ("regression", *NON_NEGATIVE)

LABEL_TRANSFORMS = ("log1p",)

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def num_outputs(task) -> int:
    """Logits per row: one, except `num_classes` for multiclass and (p, μ, σ) for ZILN."""
    if task.kind == "multiclass":
        return int(task.num_classes)
    return 3 if task.kind == "ziln" else 1


def predict(task, logits: tf.Tensor) -> tf.Tensor:
    """The task's prediction from its logits: `[batch]`, or `[batch, num_classes]` for multiclass.

    - binary: σ(z), the probability.
    - regression: z, or `expm1(z)` with `label_transform="log1p"` (back in the label's units).
    - multiclass: softmax(z), the class probabilities.
    - poisson, tweedie: exp(z), the expected count / amount (log link).
    - watch_time: exp(z), the expected watch time: the odds of the weighted logistic regression
      (Covington et al., RecSys'16, §4.1: the odds e^z learnt with positives weighted by their
      watch time T_i approximate Σ T_i / (N − k) ≈ E[T], the click rate being small).
    - ziln: p · exp(μ + σ²/2), the mean of the zero-inflated log-normal (Wang et al. 2019, eq. 3).

    Amount kinds (`SCALED`) with `label_scale = s` are trained on label / s and predict s times
    the above, in the label's units.
    """
    kind = task.kind
    if kind == "binary":
        return tf.sigmoid(logits)
    if kind == "multiclass":
        return tf.nn.softmax(logits, axis=-1)
    if kind == "regression":
        value = tf.math.expm1(logits) if task.label_transform == "log1p" else logits
    elif kind in ("poisson", "tweedie", "watch_time"):
        value = tf.exp(logits)
    else:
        probability, mu, sigma = ziln_parameters(logits)
        value = probability * tf.exp(mu + 0.5 * tf.square(sigma))
    return value if task.label_scale == 1.0 else value * task.label_scale


def ziln_parameters(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """`(p, μ, σ)` from ZILN's three logits: σ(z₀), z₁, softplus(z₂) floored at √1e-7 (the
    paper's official code floors σ the same way so that the density stays finite)."""
    return (tf.sigmoid(logits[:, 0]), logits[:, 1],
            tf.maximum(tf.nn.softplus(logits[:, 2]), math.sqrt(1e-7)))


def per_example_loss(task, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """The kind's default per-row loss `[batch]` from clean labels (missing ones set to 0)."""
    kind = task.kind
    if kind in SCALED and task.label_scale != 1.0:
        labels = labels / task.label_scale
    if kind == "binary":
        return binary_loss(labels, logits, task.pos_weight, task.focal_gamma,
                           task.label_smoothing)
    if kind == "regression":
        if task.label_transform == "log1p":
            # The loss is on log1p(label): seconds or amounts spread over orders of magnitude
            # become a well-scaled target, and the head predicts log1p directly.
            labels = tf.math.log1p(tf.maximum(labels, -1.0 + 1e-7))
        error = logits - labels
        if task.loss == "huber":
            return huber(error, task.huber_delta)
        return tf.square(error)
    if kind == "multiclass":
        classes = tf.cast(tf.clip_by_value(labels, 0.0, task.num_classes - 1.0), tf.int32)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=classes, logits=logits)
    if kind == "poisson":
        return poisson_loss(labels, logits)
    if kind == "tweedie":
        return tweedie_loss(labels, logits, task.tweedie_power)
    if kind == "watch_time":
        return watch_time_loss(labels, logits)
    return ziln_loss(labels, logits)


def binary_loss(labels, logits, pos_weight: float = 1.0, focal_gamma: float = 0.0,
                label_smoothing: float = 0.0) -> tf.Tensor:
    """Binary cross-entropy from logits with the three usual options:

        y' = y·(1 − ε) + ε/2                                    (label smoothing ε)
        ℓ = −a·y'·(1 − p)^γ·log p − (1 − y')·p^γ·log(1 − p),    p = σ(z)

    `a = pos_weight` (the multi-task form of Keras' `class_weight={1: a}`), γ the focal
    parameter (Lin et al., ICCV'17, eq. 5: each class's term is scaled by (1 − p_t)^γ, p_t the
    probability of that class; γ = 0 is plain cross-entropy). Logs of p come from softplus, so
    saturated logits stay finite."""
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if not focal_gamma:  # TensorFlow's fused forms (the same numbers as before the options)
        if pos_weight == 1.0:
            return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        return tf.nn.weighted_cross_entropy_with_logits(labels, logits, pos_weight)
    log_p = -tf.nn.softplus(-logits)
    log_not_p = -tf.nn.softplus(logits)
    positive = -labels * log_p
    negative = -(1.0 - labels) * log_not_p
    positive *= tf.exp(focal_gamma * log_not_p)  # (1 − p)^γ
    negative *= tf.exp(focal_gamma * log_p)  # p^γ
    if pos_weight != 1.0:
        positive *= pos_weight
    return positive + negative


def huber(error: tf.Tensor, delta: float) -> tf.Tensor:
    """Huber (1964): ½e² for |e| ≤ δ, δ(|e| − ½δ) beyond (Keras' `Huber` per row)."""
    absolute = tf.abs(error)
    quadratic = tf.minimum(absolute, delta)
    return 0.5 * tf.square(quadratic) + delta * (absolute - quadratic)


def poisson_loss(labels, logits) -> tf.Tensor:
    """Poisson negative log-likelihood with log link, λ = e^z: `e^z − y·z` (the `log y!` term does
    not depend on the model and is dropped)."""
    return tf.exp(logits) - labels * logits


def tweedie_loss(labels, logits, power: float) -> tf.Tensor:
    """Tweedie deviance-based negative log-likelihood with log link, μ = e^z, 1 < p < 2 (compound
    Poisson-gamma: a point mass at zero plus a continuous positive part; Jørgensen 1987, as in
    XGBoost's and LightGBM's `tweedie` objective):

        ℓ = −y·e^{(1−p)z}/(1 − p) + e^{(2−p)z}/(2 − p).
    """
    return (-labels * tf.exp((1.0 - power) * logits) / (1.0 - power)
            + tf.exp((2.0 - power) * logits) / (2.0 - power))


def watch_time_loss(labels, logits) -> tf.Tensor:
    """Weighted logistic regression for watch time (Covington et al., RecSys'16, §4.1): a row with
    watch time T > 0 is a positive weighted by T, a row with T = 0 a negative weighted by 1:

        ℓ = T·softplus(−z) if T > 0 else softplus(z),

    so that the learnt odds e^z estimate the expected watch time (see `predict`)."""
    watched = labels > 0
    return tf.where(watched, labels * tf.nn.softplus(-logits), tf.nn.softplus(logits))


def ziln_loss(labels, logits) -> tf.Tensor:
    """Zero-inflated log-normal negative log-likelihood (Wang, Liu & Miao, "A Deep Probabilistic
    Model for Customer Lifetime Value Prediction", arXiv 1912.07753, eq. 2):

        ℓ = BCE(1[y > 0], z₀) + 1[y > 0]·(log y + log σ + ½ log 2π + (log y − μ)²/(2σ²)),

    the cross-entropy of whether the value is non-zero plus, for non-zero values, the
    log-normal's negative log-density with μ = z₁ and σ = softplus(z₂) (see `ziln_parameters`).

    Only non-zero rows train μ and σ. When they are rare (a purchase value on 1 % of
    impressions), the μ and σ the network extrapolates to the other rows are barely constrained,
    and the mean p·exp(μ + σ²/2), exponential in both, can come out orders of magnitude off (read
    the task's `pcoc`). Model the value of a rare event conditionally then (a sample space on
    the event). The same happens with plenty of non-zero rows when the logs of the values, given
    the features, are spread wide and not normal: μ and σ fit their mean and spread, and the mean
    follows a tail the data do not have (`keras_mtl.diagnostics.calibration_table` shows it bucket
    by bucket; a `tweedie` task fits the mean itself)."""
    positive = labels > 0
    classification = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(positive, logits.dtype), logits=logits[:, 0])
    _, mu, sigma = ziln_parameters(logits)
    log_y = tf.math.log(tf.where(positive, labels, 1.0))
    negative_log_density = (log_y + tf.math.log(sigma) + _HALF_LOG_2PI
                            + tf.square(log_y - mu) / (2.0 * tf.square(sigma)))
    return classification + tf.where(positive, negative_log_density, 0.0)


def invalid_labels(task, labels: tf.Tensor, present: tf.Tensor) -> tf.Tensor:
    """Boolean `[batch]`: present labels the kind cannot mean (see `label_expectation`)."""
    kind = task.kind
    if kind == "binary":
        return present & tf.not_equal(labels, 0.0) & tf.not_equal(labels, 1.0)
    if kind == "multiclass":
        whole = tf.equal(labels, tf.floor(labels))
        in_range = (labels >= 0.0) & (labels < float(task.num_classes))
        return present & ~(whole & in_range)
    if kind in NON_NEGATIVE or task.group is not None:
        return present & ~(tf.math.is_finite(labels) & (labels >= 0.0))
    if task.label_transform == "log1p":
        return present & ~(tf.math.is_finite(labels) & (labels > -1.0))
    return tf.zeros_like(present)  # a non-finite regression label already skips the step


def label_expectation(task) -> str:
    """What `invalid_labels` accepts, in words, for error messages."""
    kind = task.kind
    if kind == "binary":
        return "0 or 1"
    if kind == "multiclass":
        return f"a class index 0 … {task.num_classes - 1}"
    if kind in NON_NEGATIVE:
        return "a finite number >= 0"
    if task.group is not None:
        return "a relevance grade >= 0 (ranking loss)"
    if task.label_transform == "log1p":
        return "a finite number > -1 (log1p transform)"
    return "a number"


def default_metrics(task) -> list[str]:
    """Metrics reported when `Task.metrics` is None."""
    kind = task.kind
    if task.group is not None:
        return ["ndcg_10"]
    if kind == "binary":
        return ["auc", "ne", "logloss", "pcoc", "ece"]
    if kind == "multiclass":
        return ["accuracy", "top_2"] if task.num_classes > 2 else ["accuracy"]
    if kind == "ziln":
        return ["gini", "decile_mape", "pcoc"]
    if kind in NON_NEGATIVE:
        return ["rmse", "pcoc"]
    return ["rmse"]
