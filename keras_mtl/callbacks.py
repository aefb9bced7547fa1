"""Callbacks for multi-task training: readable console output and balance monitoring.

- `TaskProgbarLogger`: Keras' progress bar with each task's headline metric instead of every
  log, skip counters only when non-zero, and after each epoch a per-task table with training and
  validation side by side. `MultiTaskModel.fit`/`evaluate` use it at `verbose=1`/`2` unless you
  pass a `keras.callbacks.ProgbarLogger` of your own (Keras' plain lines: every log).
- `BalanceMonitor`: every N steps, what only a multi-task model knows — the balancer's task
  weights, each task's gradient norm at the cut and their pairwise cosines — to TensorBoard and
  to a per-step history you can plot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np
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


class BalanceMonitor(keras.callbacks.Callback):
    """Every `every` training steps: the balancer's task weights, each task's gradient norm at the
    cut and their pairwise cosines, on a probe batch — to TensorBoard (`log_dir`) and to
    `history`.

    Args:
        data: the probe: `(x, y)` / `(x, y, sample_weight)` arrays or tensors, a DataFrame with
            the task columns, or a `tf.data.Dataset` of such batches (each record takes its next
            batch, cycling). A fixed batch makes the records comparable over time.
        every: record every this many optimizer steps (and once before training starts).
        log_dir: a TensorBoard log directory (e.g. the one given to `keras.callbacks.TensorBoard`);
            the scalars go to its `balance` run as `weight/<task>`, `weight_share/<task>`,
            `grad_norm/<task>` and `cosine/<task>~<task>`. None: history only.
        level: where gradients are taken: `"representation"` (default: at the backbone's cut,
            batch rows included) or `"parameters"` (the balanced shared parameters).

    What is recorded, through the model's public API only (`compute_gradients`,
    `task_gradients`; no step is taken, no state is written):
    - `weight/<task>`: the balancer's weight of the task on the shared parameters for the probe
      batch (`BalanceResult.weights_for_shared`, what `<task>_weight` averages per epoch), on
      the method's own scale — measured on a 2-task model: `ew`, `dwa`, `gradnorm` sum to K;
      `uw` is 1/(2σ_k²) (0.5 each at the start); `rlw`, `mgda`, `upgrad`, `imtl_g`, `famo` sum
      to 1; `pcgrad`, `cagrad`, `nash_mtl`, `db_mtl`, `aligned_mtl` have no fixed sum.
    - `weight_share/<task>`: the same normalised to sum 1 — comparable across methods.
    - `grad_norm/<task>`: `‖∇L_k‖` at `level` (`Task.weight` included); `cosine/<a>~<b>`: the
      cosine of two tasks' gradients (negative: they conflict); `<task>_loss`: the probe loss.

    `history`: one row per record (index `step`), a pandas DataFrame; `plot()` draws it.
    """

    def __init__(self, data, every: int = 100, log_dir: str | None = None,
                 level: str = "representation"):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every!r}.")
        if level not in ("representation", "parameters"):
            raise ValueError(f"level must be 'representation' or 'parameters', got {level!r}.")
        self.data = data
        self.every = int(every)
        self.log_dir = log_dir
        self.level = level
        self.records: list[dict] = []
        self._writer = None
        self._iterator = None
        self._probe = None
        self._step = 0

    # ------------------------------------------------------------------------------ probe
    def _next_probe(self) -> tuple:
        import pandas as pd
        import tensorflow as tf

        model = self.model
        if isinstance(self.data, tf.data.Dataset):
            if self._iterator is None:
                self._iterator = iter(self.data.repeat())
            batch = next(self._iterator)
            return tuple(keras.utils.unpack_x_y_sample_weight(batch))
        if self._probe is None:
            if isinstance(self.data, pd.DataFrame):
                from keras_mtl.data import plain_inputs

                x, y = plain_inputs(self.data, None, model.encoder.lookup_stage, model.tasks)
                self._probe = (x, y, None)
            else:
                self._probe = tuple(keras.utils.unpack_x_y_sample_weight(tuple(self.data)))
        return self._probe

    def measure(self) -> dict:
        """One record now (also what `every` triggers): weights, norms, cosines, probe losses."""
        from keras_mtl.diagnostics import norms_and_cosines

        model = self.model
        x, y, sample_weight = self._next_probe()
        step = model.compute_gradients(x, y, sample_weight, training=False)
        weights = np.asarray(step.result.weights_for_shared, np.float64)
        matrix = model.task_gradients(x, y, sample_weight, level=self.level).as_matrix()
        norms, cosines = norms_and_cosines(np.asarray(matrix, np.float64))
        names = model.task_names
        record = {"step": self._step}
        total = np.sum(np.abs(weights))
        for k, name in enumerate(names):
            record[f"weight/{name}"] = float(weights[k])
            record[f"weight_share/{name}"] = float(weights[k] / total) if total > 0 else np.nan
            record[f"grad_norm/{name}"] = float(norms[k])
            record[f"{name}_loss"] = float(step.losses[k])
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                record[f"cosine/{names[a]}~{names[b]}"] = float(cosines[a, b])
        return record

    def _record(self) -> None:
        record = self.measure()
        self.records.append(record)
        if self.log_dir is not None:
            import os

            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "balance"))
            with self._writer.as_default():
                for key, value in record.items():
                    if key != "step":
                        tf.summary.scalar(key if "/" in key else f"probe_loss/{key}", value,
                                          step=record["step"])
            self._writer.flush()

    # ------------------------------------------------------------------------------ Keras hooks
    def on_train_begin(self, logs=None):
        self._step = int(self.model.optimizer.iterations.numpy())
        if not self.records or self.records[-1]["step"] != self._step:
            self._record()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every == 0:
            self._record()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    # ------------------------------------------------------------------------------ results
    @property
    def history(self):
        """The records as a pandas DataFrame indexed by optimizer step."""
        import pandas as pd

        return pd.DataFrame(self.records).set_index("step") if self.records else pd.DataFrame()

    def plot(self, axes=None):
        """Weight shares, gradient norms (log scale) and cosines against the step, in three
        panels (matplotlib). Returns the figure."""
        import matplotlib.pyplot as plt

        frame = self.history
        if axes is None:
            figure, axes = plt.subplots(1, 3, figsize=(15, 3.8))
        else:
            figure = axes[0].figure
        panels = [("weight_share/", "balancer weight share", False),
                  ("grad_norm/", f"gradient norm ({self.level})", True),
                  ("cosine/", "gradient cosine", False)]
        for ax, (prefix, title, log_scale) in zip(axes, panels, strict=True):
            for column in [c for c in frame.columns if c.startswith(prefix)]:
                ax.plot(frame.index, frame[column], marker="o", markersize=3,
                        label=column[len(prefix):])
            if log_scale:
                ax.set_yscale("log")
            if prefix == "cosine/":
                ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.legend(fontsize="small")
        figure.tight_layout()
        return figure
