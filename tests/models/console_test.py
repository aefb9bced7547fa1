"""The console at verbose=1/2: a compact bar, counters only when non-zero, a per-task table."""

import keras
import numpy as np

import keras_mtl as km
from tests.helpers import small_batch, small_model


def _fit(verbose, callbacks=None, **kwargs):
    x, y = small_batch(64)
    model = small_model()
    model.compile(optimizer="adam")
    history = model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), verbose=verbose,
                        callbacks=callbacks, **kwargs)
    return model, history


def test_verbose_2_prints_compact_lines_and_a_task_table(capsys):
    _, history = _fit(2)
    out = capsys.readouterr().out
    lines = out.splitlines()
    epoch_lines = [line for line in lines if "val_loss" in line]
    assert len(epoch_lines) == 2
    for line in epoch_lines:
        assert "skipped" not in line and "_weight" not in line and len(line) < 160
        # train first, then validation
        assert line.index("click_auc") < line.index("val_loss") < line.index("val_click_auc")
    header = [line for line in lines if line.startswith("task ")]
    assert len(header) == 2 and header[0].split() == [
        "task", "loss", "auc", "ne", "logloss", "pcoc", "ece", "rmse", "weight"]
    row = next(line for line in lines if line.startswith("click "))
    assert row.split()[2] == "/"  # train / validation side by side
    # Every log still reaches History, counters included.
    assert {"skipped_steps", "click_weight", "val_click_auc"} <= set(history.history)


def test_keras_own_progress_bar_when_passed(capsys):
    _fit(2, callbacks=[keras.callbacks.ProgbarLogger()])
    out = capsys.readouterr().out
    assert "skipped_steps" in out and not any(line.startswith("task ") for line in out.splitlines())


def test_verbose_0_prints_nothing(capsys):
    _fit(0)
    assert capsys.readouterr().out == ""


def test_epoch_table_reports_skips_only_when_there_are_some():
    model = small_model()
    logs = {"loss": 1.0, "click_loss": 0.5, "click_auc": 0.7, "watch_time_loss": np.nan,
            "click_weight": 0.25, "skipped_steps": 0.0, "skipped_nonfinite_loss": 0.0}
    text = km.callbacks.epoch_table(model, logs)
    assert "Skipped" not in text and "train / validation" not in text
    assert text.splitlines()[2].split() == ["watch_time", "nan", "-", "-"]
    text = km.callbacks.epoch_table(model, {**logs, "skipped_steps": 2.0,
                                            "skipped_nonfinite_loss": 2.0})
    assert text.splitlines()[-1] == "Skipped steps: 2 (nonfinite_loss: 2)"
