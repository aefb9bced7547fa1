"""Calibration by bucket of prediction: where a task's predictions are too high or too low.

A task's `pcoc` metric is one number over the whole evaluation; a fused score multiplies the
predictions themselves, so what matters is whether each range of predictions is calibrated.
`calibration_table` sorts the labelled rows by prediction, cuts them into buckets of equal weight
and reports the mean prediction against the mean label in each — the reliability table of a
binary task, the decile chart of the ZILN paper (Wang, Liu & Miao, arXiv 1912.07753, §4.2.2) for
amounts. For a ZILN task it adds what the prediction `p·exp(μ + σ²/2)` is made of against what
the labels show, so a far-off mean can be traced to `p`, `μ` or `σ`.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import pandas as pd
import tensorflow as tf

from keras_mtl.diagnostics.batches import labelled_batches
from keras_mtl.tasks import kinds

ALL_ROWS = "all"


def calibration_table(model, x, y=None, task: str | None = None, bins: int = 10,
                      batch_size: int = 8192, sample_weight=None,
                      class_index: int | None = None) -> pd.DataFrame:
    """Mean prediction against mean label in `bins` buckets of equal weight, by prediction.

    `x`: a DataFrame (labels from its task columns when `y` is None), arrays with `y`, or a
    `tf.data.Dataset` of `(x, y[, sample_weight])` batches (all of them). The rows are those the
    task's metrics count: present labels inside its sample space (an ESMM task: impressions where
    its parent happened), weighted by `sample_weight`. `task`: the task's name (optional for a
    one-task model); `class_index`: for a multiclass task, the class whose probability is judged.

    Returns one row per bucket (`bin` 1 … `bins`, lowest predictions first) and a last row `all`:
    `rows`, `weight`, `predicted` and `observed` (weighted means) and `pcoc` (their ratio, NaN
    where the observed mean is 0; an empty bucket, when there are fewer rows than bins, is NaN).
    A ZILN task adds, side by side, what the model predicts for the bucket and what its labels
    show: `p` against `nonzero` (the share of non-zero values); `mu` and `sigma` — the mean and
    spread of the log-value the model predicts for the bucket's non-zero values, its rows'
    log-normals mixed in proportion to their `p` — against `log_mean` and `log_std` of the
    non-zero labels' logs; and `predicted_nonzero` (that mixture's mean, `Σ p·exp(μ + σ²/2) / Σ
    p`) against `observed_nonzero` (the mean non-zero label). `predicted = p · predicted_nonzero`
    exactly, so a far-off mean is traced to `p` or to the non-zero part. Rows tied on their
    prediction may fall in neighbouring buckets.

    Rows with a non-finite prediction (NaN, ±inf) are left out with a warning that counts them
    (`table.attrs["non_finite_rows"]`); the task's metrics count such predictions as 0.
    """
    task_index = _task_index(model, task)
    chosen = model.tasks[task_index]
    if chosen.kind == "multiclass":
        if class_index is None or not 0 <= int(class_index) < chosen.num_classes:
            raise ValueError(f"Task {chosen.name!r} is multiclass: give class_index, a class in "
                             f"0 … {chosen.num_classes - 1}; got {class_index!r}.")
    elif class_index is not None:
        raise ValueError(f"class_index is for multiclass tasks; task {chosen.name!r} is "
                         f"{chosen.kind}.")
    if not isinstance(bins, numbers.Integral) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}.")
    bins = int(bins)
    if isinstance(x, tf.data.Dataset) and sample_weight is not None:
        raise ValueError("With a tf.data.Dataset, sample weights come from its (x, y, "
                         "sample_weight) elements: sample_weight= would be ignored.")
    columns = _collect(model, x, y, sample_weight, int(batch_size), task_index, class_index)
    weight = columns.pop("weight")
    keep = weight > 0
    if not keep.any():
        raise ValueError(f"Task {chosen.name!r} has no labelled rows in these data (missing "
                         "labels, rows outside its sample space, or zero sample weights).")
    finite = np.isfinite(columns["predicted"])
    non_finite = int(np.sum(keep & ~finite))
    if non_finite:
        warnings.warn(
            f"Task {chosen.name!r}: {non_finite} of {int(keep.sum())} labelled rows have a "
            "non-finite prediction (NaN or ±inf) and are left out of the table (the task's "
            "metrics count them as 0).", UserWarning, stacklevel=2)
        keep &= finite
        if not keep.any():
            raise ValueError(f"Task {chosen.name!r}: no labelled row has a finite prediction.")
    order = np.argsort(columns["predicted"][keep], kind="stable")
    weight = weight[keep][order]
    values = {name: column[keep][order] for name, column in columns.items()}
    cumulative = np.cumsum(weight)
    middle = (cumulative - weight / 2) / cumulative[-1]
    bucket = np.minimum((middle * bins).astype(int), bins - 1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rows = [_summary(weight[bucket == b], {n: v[bucket == b] for n, v in values.items()})
                for b in range(bins)]
        rows.append(_summary(weight, values))
    table = pd.DataFrame(rows, index=pd.Index([*range(1, bins + 1), ALL_ROWS], name="bin"))
    table.attrs["non_finite_rows"] = non_finite
    return table


def _task_index(model, task: str | None) -> int:
    names = list(model.task_names)
    if task is None:
        if len(names) == 1:
            return 0
        raise ValueError(f"Name the task to tabulate: task= one of {names}.")
    if task not in names:
        raise ValueError(f"Unknown task {task!r}; the tasks are {names}.")
    return names.index(task)


def _collect(model, x, y, sample_weight, batch_size, k, class_index) -> dict:
    """Per labelled row: weight, prediction, label (and a ZILN task's p, μ, σ) as arrays."""
    task = model.tasks[k]
    parts: dict[str, list] = {}
    for bx, by, bw in _all_batches(model, x, y, sample_weight, batch_size):
        forward = model.forward(bx, training=False)
        terms = model.task_terms(by, forward, bw, features=bx)
        logits = forward.logits[k]
        predicted = task.predict(logits)
        observed = terms.labels[task.name]
        if class_index is not None:
            predicted = predicted[:, class_index]
            observed = tf.cast(tf.equal(observed, float(class_index)), tf.float32)
        batch = {"weight": terms.metric_weights(model.tasks)[k], "predicted": predicted,
                 "observed": observed}
        if task.kind == "ziln":
            batch["p"], batch["mu"], batch["sigma"] = kinds.ziln_parameters(logits)
            if task.label_scale != 1.0:  # μ in the label's units: log(s·y) = log s + log y
                batch["mu"] += float(np.log(task.label_scale))
        for name, value in batch.items():
            parts.setdefault(name, []).append(np.asarray(value, np.float64).reshape(-1))
    if not parts:
        raise ValueError("No batches in these data.")
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _summary(weight: np.ndarray, values: dict) -> dict:
    total = weight.sum()

    def mean(v, w=weight, t=total):
        return float(np.sum(w * v) / t) if t > 0 else float("nan")

    predicted, observed = mean(values["predicted"]), mean(values["observed"])
    row = {"rows": int(len(weight)), "weight": float(total), "predicted": predicted,
           "observed": observed, "pcoc": predicted / observed if observed != 0 else float("nan")}
    if "mu" in values:
        labels = values["observed"]
        nonzero = labels > 0
        w, logs = weight[nonzero], np.log(labels[nonzero])
        log_mean = mean(logs, w, w.sum())
        # The model's non-zero values in the bucket: each row's log-normal, weighted by w·p.
        mixed = weight * values["p"]
        mu, sigma = values["mu"], values["sigma"]
        mixture_mu = mean(mu, mixed, mixed.sum())
        mixture_second = mean(sigma ** 2 + mu ** 2, mixed, mixed.sum())
        row.update({
            "p": mean(values["p"]), "nonzero": float(w.sum() / total) if total > 0 else np.nan,
            "mu": mixture_mu, "log_mean": log_mean,
            "sigma": float(np.sqrt(max(mixture_second - mixture_mu ** 2, 0.0))),
            "log_std": float(np.sqrt(mean((logs - log_mean) ** 2, w, w.sum()))),
            "predicted_nonzero": mean(np.exp(mu + 0.5 * sigma ** 2), mixed, mixed.sum()),
            "observed_nonzero": mean(labels[nonzero], w, w.sum()),
        })
    return row


def _all_batches(model, x, y, sample_weight, batch_size):
    def consecutive_rows(rows):
        for start in range(0, rows, batch_size):
            yield np.arange(start, min(start + batch_size, rows))

    return labelled_batches(model, x, y, sample_weight, "calibration_table", consecutive_rows)
