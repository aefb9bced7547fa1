"""What keeps a training step honest: finite checks, the guarded update, counters and their checks.

- `StepFlags` / `step_flags`: whether a step's losses, gradients and new balancer state are
  finite (agreed across replicas: one replica's NaN skips the step everywhere).
- `apply_if`: `optimizer.apply` on finite steps only, so weights and optimizer state are untouched
  otherwise (also under MirroredStrategy, whose all-reduce cannot run inside a `tf.cond`).
- `StepCounters`: running totals over an epoch (steps, skipped steps and why, labels outside a
  task's range, ESMM violations, labelled rows per task), summed over replicas.
- `TrainingGuard`: the callback that reads those counters at epoch (evaluation) ends — never per
  batch, which would sync the device — and turns them into errors, warnings and NaN logs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_mtl.tasks import kinds

# Why a step was skipped, in the order the step checks (a step is counted under the first).
SKIP_REASONS = ("nonfinite_loss", "nonfinite_gradient", "nonfinite_balancer_state")
_REASON_WORDS = {"nonfinite_loss": "non-finite loss", "nonfinite_gradient": "non-finite gradient",
                 "nonfinite_balancer_state": "non-finite balancer state"}


def all_finite(tensors: Iterable) -> tf.Tensor:
    """True where every floating-point tensor of `tensors` is finite (integers always are;
    IndexedSlices are checked on their values).

    Tensors up to `_CHECKED_TOGETHER` elements are flattened into one vector per dtype and
    checked at once: one reduction instead of one per variable (counted by hand at MMoE K = 32:
    ≈ 190 gradients, ≈ 200 of the ≈ 2,900 kernels XLA compiled for the step); without XLA the
    concatenation costs no more than the per-tensor checks it replaces (timed by hand). Larger
    ones (a densified embedding table) are checked in place rather than copied."""
    together: dict = {}
    finite = tf.constant(True)
    for tensor in tensors:
        if isinstance(tensor, tf.IndexedSlices):
            tensor = tensor.values
        tensor = tf.convert_to_tensor(tensor)
        if not tensor.dtype.is_floating:
            continue
        size = tensor.shape.num_elements()
        if size is not None and size <= _CHECKED_TOGETHER:
            together.setdefault(tensor.dtype, []).append(tf.reshape(tensor, [-1]))
        else:
            finite &= tf.reduce_all(tf.math.is_finite(tensor))
    for flat in together.values():
        finite &= tf.reduce_all(tf.math.is_finite(tf.concat(flat, 0)))
    return finite


_CHECKED_TOGETHER = 1 << 20


def agreed(flags: Sequence[tf.Tensor], replica) -> list[tf.Tensor]:
    """Each flag true on every replica (themselves when alone), in one all-reduce."""
    if replica is None:
        return list(flags)
    failures = replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack(
        [1.0 - tf.cast(flag, tf.float32) for flag in flags]))
    return tf.unstack(tf.equal(failures, 0.0))


class StepFlags(NamedTuple):
    """Whether a step's parts are finite, and what follows for the update."""

    losses: tf.Tensor
    gradients: tf.Tensor
    state: tf.Tensor

    @property
    def finite(self) -> tf.Tensor:
        return self.losses & self.gradients & self.state

    def apply_update(self, loss_scaled: bool) -> tf.Tensor:
        """When the optimizer may see the gradients. A loss-scale optimizer must see overflowing
        gradients (it halves its scale and skips the update itself; the balancer state derived
        from them is non-finite too and is not written); bad data (a non-finite loss) and a
        non-finite state from finite gradients never reach any optimizer."""
        if loss_scaled:
            return self.losses & (self.state | ~self.gradients)
        return self.finite

    def reasons(self, post_step_finite: tf.Tensor) -> tuple:
        """One flag per `SKIP_REASONS`, each step counted under the first that applies."""
        return (~self.losses, self.losses & ~self.gradients,
                self.losses & self.gradients & (~self.state | ~post_step_finite))


def step_flags(losses, grads, state_values, replica) -> StepFlags:
    """Which of the step's losses, gradients and new state values are finite, on all replicas."""
    return StepFlags(*agreed([all_finite([losses]), all_finite(grads), all_finite(state_values)],
                             replica))


def apply_if(optimizer, condition, grads, variables, replica, select: bool = False) -> None:
    """`optimizer.apply(grads, variables)` where `condition` holds (optimizer state untouched
    otherwise). Every replica agrees on `condition` (see `agreed`).

    `select`: without a branch — the update is computed in a `keras.StatelessScope` (nothing
    written), then every variable it would write (the weights and the optimizer's own: slots,
    iterations) takes its new value where `condition` holds and keeps its old one elsewhere.
    Under XLA a `tf.cond` around the whole update is what compiles slowly: at MMoE K = 16 it
    added 13–16 s to the step's compilation (40.5 s against 24.4 s, timed by hand on the 2-core
    VM; the steady step is the same either way). Used on one replica with dense gradients only:
    selecting a sparsely updated embedding table would rewrite the whole table every step."""
    if select and replica is None and not any(isinstance(g, tf.IndexedSlices) for g in grads):
        written = [*variables, *optimizer.variables]
        with keras.StatelessScope() as scope:
            optimizer.apply(grads, variables)
        for variable in written:
            new = scope.get_current_value(variable)
            if new is not None:
                variable.assign(tf.where(condition, new, variable.value))
        return

    def apply():
        optimizer.apply(grads, variables)
        return tf.constant(0.0)

    def skip():
        return tf.constant(0.0)

    if replica is None or tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(condition, apply, skip)
        return

    # MirroredStrategy all-reduces gradients with a merge call, which it cannot run inside a
    # tf.cond in replica context: branch once in cross-replica context instead, as Keras'
    # LossScaleOptimizer does.
    def cross_replica(distribution, condition, grads):
        decided = distribution.experimental_local_results(condition)[0]

        def apply_everywhere():
            distribution.extended.call_for_each_replica(
                lambda g: optimizer.apply(g, variables), args=(grads,))
            return tf.constant(0.0)

        tf.cond(decided, apply_everywhere, skip)

    replica.merge_call(cross_replica, args=(condition, grads))


class StepCounters(keras.metrics.Metric):
    """Running totals the model reads back itself: steps, skipped steps and their reasons, labels
    outside a task's range, ESMM violations and each task's labelled (metric) rows.

    A metric, so Keras resets it at every epoch and evaluation and sums it over replicas. Only the
    skip totals are logged (`skipped_steps`, `skipped_<reason>`); the rest feed `TrainingGuard`
    and the NaN of a task without rows."""

    def __init__(self, num_tasks: int, name: str = "step_counters", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_tasks = int(num_tasks)

        def totals(name, shape=()):
            return self.add_variable(shape, initializer="zeros", name=name)

        self.steps = totals("steps")
        self.skipped = totals("skipped_steps")
        self.reasons = totals("skip_reasons", (len(SKIP_REASONS),))
        self.invalid_labels = totals("invalid_labels", (self.num_tasks,))
        self.esmm_violations = totals("esmm_violations", (self.num_tasks,))
        self.labelled_rows = totals("labelled_rows", (self.num_tasks,))

    def update_state(self, *args, **kwargs):
        raise TypeError("StepCounters is updated through count_step/count_labels/count_rows.")

    def count_step(self, written: tf.Tensor, reasons: Sequence[tf.Tensor], share: float) -> None:
        """One step; `share` = 1/replicas, so the totals summed over replicas count it once."""
        self.steps.assign_add(share)
        self.skipped.assign_add((1.0 - tf.cast(written, tf.float32)) * share)
        self.reasons.assign_add(tf.stack([tf.cast(r, tf.float32) for r in reasons]) * share)

    def count_labels(self, invalid: tf.Tensor, violations: tf.Tensor) -> None:
        self.invalid_labels.assign_add(tf.cast(invalid, tf.float32))
        self.esmm_violations.assign_add(tf.cast(violations, tf.float32))

    def count_rows(self, labelled: tf.Tensor) -> None:
        self.labelled_rows.assign_add(tf.cast(labelled, tf.float32))

    def logs(self) -> dict:
        """The logged totals: `skipped_steps` and one `skipped_<reason>` per reason."""
        logs = {"skipped_steps": tf.identity(self.skipped)}
        for reason, total in zip(SKIP_REASONS, tf.unstack(self.reasons), strict=True):
            logs[f"skipped_{reason}"] = total
        return logs

    def result(self):
        return self.logs()

    def report(self) -> dict:
        """The current epoch's (evaluation's) counts, as Python numbers (one device read)."""
        reasons = np.asarray(self.reasons.numpy())
        return {
            "steps": float(self.steps.numpy()),
            "skipped": float(self.skipped.numpy()),
            "reasons": dict(zip(SKIP_REASONS, map(float, reasons), strict=True)),
            "invalid_labels": np.asarray(self.invalid_labels.numpy()),
            "esmm_violations": np.asarray(self.esmm_violations.numpy()),
        }

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks}


def check_labels(tasks, report: dict, where: str) -> None:
    """ValueError for labels outside a task's range; a warning for ESMM violations."""
    bad = [(t, int(n)) for t, n in zip(tasks, report["invalid_labels"], strict=True) if n > 0]
    if bad:
        described = "; ".join(f"task {t.name!r} ({t.kind}): {n} label(s) that are not "
                              f"{kinds.label_expectation(t)}" for t, n in bad)
        raise ValueError(
            f"Invalid labels in {where}: {described}. Mark a missing label with NaN (or the "
            "task's missing_value), not another number."
        )
    for task, count in zip(tasks, report["esmm_violations"], strict=True):
        if count > 0:
            warnings.warn(
                f"{where}: {int(count)} row(s) label ESMM task {task.name!r} 1 where its parent "
                f"{task.esmm_parent!r} is 0. ESMM trains p({task.esmm_parent} ∧ {task.name}), "
                f"so those rows count as negatives; check the join of the two label columns.",
                UserWarning, stacklevel=3)


def all_skipped_message(report: dict, epoch: int) -> str:
    reasons = ", ".join(f"{int(round(n))} {_REASON_WORDS[r]}"
                        for r, n in report["reasons"].items() if n > 0)
    return (
        f"Epoch {epoch + 1}: all {int(round(report['steps']))} training steps were skipped "
        f"({reasons}), so nothing was trained; its logs are NaN. Likely causes: ±inf or NaN in "
        "features or regression labels, a learning rate that made the weights diverge, a "
        "non-finite balancer hyper-parameter or state, or (mixed precision) a loss scale "
        "that overflows on every step. `model.compute_gradients(x, y)` on one batch shows "
        "which losses or gradients are non-finite."
    )


class TrainingGuard(keras.callbacks.Callback):
    """What `fit`/`evaluate` check outside the compiled step, at epoch (or evaluation) ends only.

    - The model's epoch counter: `max(counter, epoch)` when an epoch begins (so `initial_epoch`
      and `BackupAndRestore` resume it), +1 when it ends having trained (an epoch whose every
      step was skipped leaves it, as a skipped step leaves `optimizer.iterations`). It counts the
      epochs trained so far whatever the calls look like: `fit(epochs=1)` four times advances it
      like `fit(epochs=4)`.
    - Labels outside a task's range, counted in the step (XLA drops `tf.debugging.Assert`):
      a ValueError naming the task; ESMM children labelled 1 under a parent 0: a warning.
    - An epoch whose every step was skipped: its logs become NaN (never `loss 0.0`), training
      stops, and `fit` raises a RuntimeError naming the count and the reasons. The error is
      raised from `on_train_end`, before later callbacks' (a `BackupAndRestore` backup is kept).

    The model provides `epoch` (a variable), `tasks` and `step_counters` (`StepCounters`).
    """

    def __init__(self):
        super().__init__()
        self._in_epoch = False
        self._snapshot = None
        self._error = None

    def on_train_begin(self, logs=None):
        self._error = None

    def on_epoch_begin(self, epoch, logs=None):
        counter = self.model.epoch
        counter.assign(max(int(counter.numpy()), int(epoch)))
        self._in_epoch, self._snapshot = True, None

    def on_test_begin(self, logs=None):
        # Validation inside fit resets every metric: read the training counts before it does.
        if self._in_epoch and self._snapshot is None:
            self._snapshot = self.model.step_counters.report()

    def on_test_end(self, logs=None):
        check_labels(self.model.tasks, self.model.step_counters.report(), "evaluation")

    def on_epoch_end(self, epoch, logs=None):
        report = self._snapshot or self.model.step_counters.report()
        self._in_epoch, self._snapshot = False, None
        check_labels(self.model.tasks, report, f"epoch {epoch + 1}")
        if not (report["steps"] > 0 and report["skipped"] >= report["steps"]):
            self.model.epoch.assign(int(self.model.epoch.numpy()) + 1)
            return
        # Nothing was trained. The logs dict is shared with the callbacks after this one.
        for key in logs if logs is not None else ():
            if not key.startswith(("val_", "skipped")):
                logs[key] = float("nan")
        self._error = RuntimeError(all_skipped_message(report, epoch))
        self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._error is not None:
            error, self._error = self._error, None
            raise error
