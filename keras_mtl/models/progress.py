"""The console output of a multi-task model's training: Keras' progress bar with each task's
headline metric instead of every log, skip counters only when non-zero, and after each epoch a
per-task table with training and validation side by side. `MultiTaskModel.fit`/`evaluate` use
`TaskProgbarLogger` at `verbose=1`/`2` unless a `keras.callbacks.ProgbarLogger` is passed (Keras'
plain lines: every log). Re-exported by `keras_mtl.callbacks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
from keras.src.utils import io_utils

from keras_mtl.models.guard import SKIP_REASONS

COUNTERS = ("skipped_steps", *(f"skipped_{reason}" for reason in SKIP_REASONS))


def task_log_names(model) -> dict[str, list[str]]:
    """Each task's logged names, in order: `<task>_loss`, its metrics (`<task>_<metric>`) and, in
    training, `<task>_weight`."""
    names = {}
    for task, metrics in zip(model.tasks, model.step_metrics.task_metrics, strict=True):
        names[task.name] = [f"{task.name}_loss", *(m.name for m in metrics),
                            f"{task.name}_weight"]
    return names


def headline(model) -> dict[str, str]:
    """Each task's first metric (binary: AUC, regression: RMSE, ...), else its loss."""
    return {name: logs[1] if len(logs) > 2 else logs[0]
            for name, logs in task_log_names(model).items()}


def _number(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _cell(value) -> str:
    value = _number(value)
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def epoch_table(model, logs: Mapping, title: str = "") -> str:
    """One row per task, one column per logged quantity (loss, metrics, balancer weight); a cell
    is `train / validation` when validation logs are there (`val_<name>`). Skip counters follow
    only when a step was skipped."""
    names = task_log_names(model)
    validated = any(key.startswith("val_") for key in logs)
    columns: list[str] = []
    rows = []
    for task, keys in names.items():
        row = {"task": task}
        for key in keys:
            column = key[len(task) + 1:]
            if key not in logs and f"val_{key}" not in logs:
                continue
            if column not in columns:
                columns.append(column)
            cell = _cell(logs.get(key))
            if validated and column != "weight":
                cell = f"{cell} / {_cell(logs.get(f'val_{key}'))}"
            row[column] = cell
        rows.append(row)
    header = ["task", *[c for c in columns if c != "weight"], *(["weight"] if "weight" in columns
                                                                  else [])]
    widths = {c: max(len(c), *(len(r.get(c, "-")) for r in rows)) for c in header}
    lines = [title] if title else []
    lines.append("  ".join(c.ljust(widths[c]) for c in header).rstrip())
    lines += ["  ".join(r.get(c, "-").ljust(widths[c]) for c in header).rstrip() for r in rows]
    if validated:
        lines.append("(train / validation; weight: the balancer's, mean over the epoch's steps)")
    skipped = {key: _number(logs.get(key)) for key in COUNTERS}
    if (skipped["skipped_steps"] or 0) > 0:
        reasons = ", ".join(f"{key[len('skipped_'):]}: {value:g}" for key, value in skipped.items()
                            if key != "skipped_steps" and value)
        lines.append(f"Skipped steps: {skipped['skipped_steps']:g} ({reasons})")
    return "\n".join(lines)


class TaskProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras' `ProgbarLogger`, readable with several tasks.

    The bar shows `loss`, each task's headline metric (`headline`) and the skip counters only
    when non-zero; the epoch's line adds the same for validation (train first, then `val_`);
    after it, at `verbose=1` and `2`, `epoch_table` prints every task's loss, metrics and balancer
    weight, training and validation side by side (`table=False`: no table). Every log still
    reaches the other callbacks (`History`, `CSVLogger`, `TensorBoard`) unchanged.
    """

    def __init__(self, table: bool = True):
        super().__init__()
        self.table = bool(table)
        self._epoch = None

    def _compact(self, logs, final: bool) -> dict:
        logs = dict(logs or {})
        if not hasattr(self.model, "tasks"):
            return logs
        keys = ["loss", *headline(self.model).values()]
        if final:
            keys += [f"val_{key}" for key in keys]
        compact = {key: logs[key] for key in keys if key in logs}
        for key in COUNTERS:
            if (_number(logs.get(key)) or 0) > 0:
                compact[key] = logs[key]
        return compact

    def _update_progbar(self, batch, logs=None):
        super()._update_progbar(batch, self._compact(logs, final=False))

    def _finalize_progbar(self, logs):
        super()._finalize_progbar(self._compact(logs, final=True))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.verbose and self.table and logs and hasattr(self.model, "tasks"):
            io_utils.print_msg(epoch_table(self.model, logs))

    def on_test_end(self, logs=None):
        super().on_test_end(logs)
        if (not self._called_in_fit and self.verbose and self.table and logs
                and hasattr(self.model, "tasks")):
            io_utils.print_msg(epoch_table(self.model, logs))
