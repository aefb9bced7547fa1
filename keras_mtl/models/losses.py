"""Per-task losses: labels, missing-label masks, sample spaces, ESMM's entire-space loss, ESCM²'s
counterfactual regulariser and per-row terms a task graph adds (AITM's calibrator)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import tensorflow as tf

from keras_mtl.features.lookups import row_key
from keras_mtl.gradients.distribution import replica_context
from keras_mtl.tasks import Task, kinds
from keras_mtl.tasks.ranking import ranking_loss


class TaskLosses(NamedTuple):
    """One batch's per-task losses and what the metrics need of the labels.

    - `shares`: K scalars, task k's (sample-weighted) mean loss over its valid rows — present
      labels inside its sample space, or every impression with a parent label for an ESMM task.
      Under a multi-replica strategy each is this replica's share of the global mean (the shares
      sum to it). Each is computed from its own task's terms only, so back-propagating one touches
      that task's path alone (from an entry of a stacked vector, every head would be
      differentiated with zero gradients: K per-task passes would cost K² head passes).
    - `weighted`: the shares times `Task.weight`, what balancers and autodiff see.
    - `labels`: each task's labels with missing ones replaced by 0.
    - `row_weights`: each task's `[batch]` row weights (mask × sample weight).
    """

    shares: tuple
    weighted: tuple
    labels: dict
    row_weights: tuple

    @property
    def stacked(self) -> tf.Tensor:
        """`[K]` shares (Task.weight not applied)."""
        return tf.stack(self.shares)

    def metric_weights(self, tasks: Sequence[Task]) -> list[tf.Tensor]:
        """Each task's `[batch]` weights for its metrics: its row weights, except that an ESMM
        task's pCVR is judged only where its parent happened (its loss covers every impression)."""
        weights = []
        for task, row_weight in zip(tasks, self.row_weights, strict=True):
            if task.esmm_parent is not None:
                row_weight = row_weight * tf.cast(self.labels[task.esmm_parent] > 0.5, tf.float32)
            weights.append(row_weight)
        return weights


class TaskLossFunction:
    """The tasks' losses from labels and logits (`[batch]` per task, `[batch, outputs]` for a kind
    with several outputs). `features` are needed only by ranking losses (their groups);
    `imputations` (per task, None for most) only by ESCM²-DR tasks: their imputation tower's
    predicted CVR error `[batch]`.

    `row_terms`: None, or a function of the K logits returning `{task index: [batch] term}`,
    each added to that task's per-row loss before its mask and mean (AITM's calibrator,
    `layers.AITM.row_terms`): part of the task's loss, so every balancer level sees it."""

    def __init__(self, tasks: Sequence[Task], row_terms: Callable | None = None):
        self.tasks = list(tasks)
        self.names = [t.name for t in self.tasks]
        self.factors = [float(t.weight) for t in self.tasks]
        self.row_terms = row_terms

    def labels(self, y) -> dict:
        """`y` as `{task: [batch] float32}`, with a clear error for a wrong dict or shape."""
        if not isinstance(y, dict):
            raise TypeError(f"Labels must be a dict keyed by task name {self.names}; got {type(y)}.")
        unknown = sorted(set(y) - set(self.names))
        if unknown:
            raise ValueError(f"Labels for unknown task(s) {unknown}; the tasks are {self.names}.")
        labels = {}
        for task in self.tasks:
            if task.name not in y:
                raise KeyError(
                    f"No labels for task {task.name!r}; got labels for {sorted(y)}. Missing "
                    "labels within a task are NaN (or the task's missing_value), not a missing key."
                )
            value = tf.cast(y[task.name], tf.float32)
            if value.shape.rank == 2 and value.shape[-1] == 1:
                value = value[:, 0]
            elif value.shape.rank != 1:
                raise ValueError(
                    f"Labels of task {task.name!r} must have shape [batch] or [batch, 1]; got "
                    f"{value.shape}."
                )
            labels[task.name] = value
        return labels

    def __call__(self, y, logits: Sequence[tf.Tensor], sample_weight=None,
                 features=None, imputations: Sequence | None = None) -> TaskLosses:
        labels = self.labels(y)
        extra = self.row_terms(list(logits)) if self.row_terms is not None else {}
        present = {t.name: t.present_mask(labels[t.name]) for t in self.tasks}
        clean = {n: tf.where(present[n], labels[n], 0.0) for n in labels}
        row_weights = self.row_weights(sample_weight)
        totals, counts, weights = [], [], []
        for task, logit in zip(self.tasks, logits, strict=True):
            row_weight = row_weights.get(task.name)
            mask = present[task.name]
            if task.sample_space is not None:
                mask &= present[task.sample_space] & (clean[task.sample_space] > 0.5)
            if task.esmm_parent is not None:
                parent = task.esmm_parent
                clicked = clean[parent] > 0.5
                # Every impression with a click label; unclicked rows have label 0 whatever the
                # conversion column says, clicked rows need their conversion label.
                mask = present[parent] & (present[task.name] | ~clicked)
                conversion = tf.where(clicked, clean[task.name], 0.0)
                parent_logit = logits[self.names.index(parent)]
                per_example = esmm_cross_entropy(conversion, parent_logit, logit)
                if task.counterfactual is not None:  # ESCM²: L_CTCVR + λ_c · R
                    imputed = None
                    if task.counterfactual == "dr":
                        imputed = None if imputations is None else imputations[
                            self.names.index(task.name)]
                        if imputed is None:
                            raise ValueError(f"Task {task.name!r} is ESCM²-DR: its loss needs the "
                                             "imputation tower's output (imputations=).")
                    per_example += task.counterfactual_weight * counterfactual_risk(
                        task.counterfactual, clicked, conversion, parent_logit, logit, imputed)
            elif task.ranking_loss is None:
                per_example = task.per_example_loss(clean[task.name], logit)
            k = self.names.index(task.name)
            if k in extra:
                per_example = per_example + extra[k]
            weight = tf.cast(mask, tf.float32)
            if row_weight is not None:
                weight *= row_weight
            if task.ranking_loss is not None:  # a mean over the batch's groups, not its rows
                total, count = ranking_loss(task.ranking_loss, clean[task.name], logit,
                                            group_values(task, features), weight)
                totals.append(total)
                counts.append(count)
                weights.append(weight)
                continue
            # where(), not a product: a masked row's loss may be inf/NaN and 0·inf is NaN.
            per_example = tf.where(mask, per_example, 0.0)
            totals.append(tf.reduce_sum(weight * per_example))
            counts.append(tf.reduce_sum(weight))
            weights.append(weight)
        counts = tf.stack(counts)
        replica, _ = replica_context()
        if replica is not None:
            # Divide by the global count: each replica's loss is then its share of the global
            # mean, the shares sum to it, and so do their gradients (the optimizer sums them).
            counts = replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(counts))
        shares = tuple(tf.math.divide_no_nan(total, count)
                       for total, count in zip(totals, tf.unstack(counts), strict=True))
        return TaskLosses(shares, tuple(self.weight(shares)), clean, tuple(weights))

    def row_weights(self, sample_weight) -> dict:
        """Each task's `[batch]` row weights from `sample_weight`: one vector for every task, or a
        dict of per-task vectors (a task left out weighs its rows 1). Keras hands a dict when a
        single numpy `sample_weight` meets dict labels: it spreads the array over the tasks."""
        if sample_weight is None:
            return {}
        if isinstance(sample_weight, dict):
            unknown = sorted(set(sample_weight) - set(self.names))
            if unknown:
                raise ValueError(f"sample_weight names {unknown}, which are not tasks; the tasks "
                                 f"are {self.names}.")
            return {name: tf.reshape(tf.cast(value, tf.float32), [-1])
                    for name, value in sample_weight.items() if value is not None}
        vector = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        return dict.fromkeys(self.names, vector)

    def weight(self, losses):
        """`Task.weight` applied to a `[K]` vector or to a list of K scalars (kept independent)."""
        if isinstance(losses, list | tuple):
            return [loss if f == 1.0 else loss * f
                    for loss, f in zip(losses, self.factors, strict=True)]
        if all(f == 1.0 for f in self.factors):
            return losses
        return losses * tf.constant(self.factors, tf.float32)

    def label_errors(self, y) -> tuple[tf.Tensor, tf.Tensor]:
        """`([K] labels the task cannot mean, [K] ESMM rows labelled 1 under a parent 0)`.

        Binary tasks take 0 or 1, NaN or the task's `missing_value` for a missing label; anything
        else (2, −1, ±inf) is counted; other kinds as `kinds.invalid_labels` says (a class index
        in range, an amount >= 0). An ESMM task labelled 1 on a row whose parent is 0 (a
        conversion without a click) is counted separately: the ESMM loss trains that row as a
        negative. Counted rather than asserted because XLA drops `tf.debugging.Assert`."""
        labels = self.labels(y)
        present = {t.name: t.present_mask(labels[t.name]) for t in self.tasks}
        invalid, violations = [], []
        for task in self.tasks:
            value, here = labels[task.name], present[task.name]
            bad = kinds.invalid_labels(task, value, here)
            invalid.append(tf.reduce_sum(tf.cast(bad, tf.float32)))
            if task.esmm_parent is not None:
                parent = labels[task.esmm_parent]
                bad = here & present[task.esmm_parent] & tf.equal(value, 1.0) & tf.equal(parent, 0.0)
                violations.append(tf.reduce_sum(tf.cast(bad, tf.float32)))
            else:
                violations.append(tf.constant(0.0))
        return tf.stack(invalid), tf.stack(violations)


def esmm_cross_entropy(labels, parent_logits, logits) -> tf.Tensor:
    """Cross-entropy of `p = σ(parent_logits)·σ(logits)` (pCTCVR), stable in log space."""
    log_p = -tf.nn.softplus(-parent_logits) - tf.nn.softplus(-logits)  # log σ(a) + log σ(b)
    log_not_p = tf.math.log(-tf.math.expm1(tf.minimum(log_p, -1e-7)))  # log(1 − p)
    return -(labels * log_p + (1.0 - labels) * log_not_p)


# ESCM²'s official code (PaddleRec `models/multitask/escm2`, IPS) clips the inverse propensity
# at 15 ("online trick"): a row with pCTR < 1/15 weighs as one with pCTR = 1/15.
MAX_INVERSE_PROPENSITY = 15.0


def counterfactual_risk(variant: str, clicked, labels, parent_logits, logits,
                        imputed=None) -> tf.Tensor:
    """ESCM²'s counterfactual CVR risk per impression row (Wang et al., "ESCM²: Entire Space
    Counterfactual Multi-Task Model for Post-Click Conversion Rate Estimation", SIGIR'22, §4).

    With o the click indicator, t̂ = pCTR the propensity, e = CE(pCVR, conversion label) the CVR
    error (it matters only where o = 1) and ê the imputation tower's predicted error:

        IPS:  R_IPS = 1/|D| Σ_D o·e / t̂
        DR:   R_DR  = 1/|D| Σ_D [ ê + o·(e − ê) / t̂ ]   plus the imputation loss
              L_IMP = 1/|D| Σ_D o·(e − ê)² / t̂          (trained jointly, in the same term)

    This returns the bracketed per-row summands (IPS: o·e/t̂; DR: ê + o·δ/t̂ + o·δ²/t̂ with
    δ = e − ê); the caller takes the mean over the task's rows D (every impression with a click
    label). Choices the paper leaves open, and ours:
    - the propensity is `stop_gradient(max(pCTR, 1/15))`: a constant weight, as the official
      code's IPS variant makes it (`IPS.stop_gradient = True`, clipped at 15). Its DR variant
      lets the gradient through (floor 1e-6); we stop it there too, because ∂(o·e/t̂)/∂t̂ < 0
      rewards pushing pCTR up on clicked rows for no reason but shrinking the regulariser, and
      keep the same clip for both;
    - ê's link is softplus (an error is >= 0 and unbounded; the official code uses a sigmoid,
      which caps the imputed error at 1), applied by the model's imputation head;
    - L_IMP trains ê and the CVR head jointly with R_DR under the same weight λ_c, as the
      official code does (no alternating updates)."""
    o = tf.cast(clicked, tf.float32)
    error = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    propensity = tf.stop_gradient(tf.maximum(tf.sigmoid(parent_logits),
                                             1.0 / MAX_INVERSE_PROPENSITY))
    if variant == "ips":
        return o * error / propensity
    if variant != "dr":
        raise ValueError(f"Unknown counterfactual variant {variant!r}; 'ips' or 'dr'.")
    delta = error - imputed
    return imputed + o * delta / propensity + o * tf.square(delta) / propensity


def group_values(task: Task, features) -> tf.Tensor:
    """The values of a ranking task's group feature (its table rows when the input pipeline
    looked it up: equal values share a row, so they group the same way)."""
    if features is None:
        raise ValueError(f"Task {task.name!r} has a ranking loss: its loss needs the features "
                         f"(group {task.group!r}); pass features= to the task loss function.")
    for key in (task.group, row_key(task.group)):
        if key in features:
            return features[key]
    raise KeyError(f"Task {task.name!r} ranks rows by group feature {task.group!r}, which is not "
                   f"in the inputs {sorted(features)}.")
