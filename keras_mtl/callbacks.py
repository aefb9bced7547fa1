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

import keras
import numpy as np

from keras_mtl.models.progress import (  # noqa: F401 (the public names of this module)
    COUNTERS,
    TaskProgbarLogger,
    epoch_table,
    headline,
    task_log_names,
)
from keras_mtl.optional import require


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
        plt = require("matplotlib.pyplot", "tutorials", "BalanceMonitor.plot")

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
