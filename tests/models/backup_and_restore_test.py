"""A training process killed mid-epoch (SIGKILL, no clean-up) and resumed with
`keras.callbacks.BackupAndRestore` ends exactly where an uninterrupted run ends: weights,
optimizer and balancer state."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import tensorflow as tf
    import keras
    import keras_mtl as km
    from tests.helpers import BACKBONES, xla_data, xla_spec

    out, backup, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    model = km.MultiTaskModel(
        features=xla_spec(), tasks=[km.Task("click"), km.Task("watch_time", kind="regression")],
        backbone=BACKBONES["mmoe"](), tower_units=[8], balancer=sys.argv[4])
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    x, y = xla_data(512, seed=5)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)  # the same order every epoch

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.seen = getattr(self, "seen", 0) + 1
            if self.seen == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no callbacks

    callbacks = [keras.callbacks.BackupAndRestore(backup)] if backup != "-" else []
    history = model.fit(data, epochs=4, verbose=0, callbacks=callbacks + [Kill()])
    print("epochs trained:", history.epoch)
    np.savez(out, **{f"{i}": np.asarray(v) for i, v in enumerate(
        list(model.weights) + list(model.optimizer.variables))})
""")


def _run(tmp_path, name, backup, kill_at, balancer):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / f"{name}.npz"), backup, str(kill_at),
         balancer], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_state_as_an_uninterrupted_one(tmp_path):
    # MultiBalance: representation-level gradients and an EMA in its state.
    balancer = "multibalance"
    backup = str(tmp_path / "backup")
    whole = _run(tmp_path, "whole", "-", 0, balancer)
    assert whole.returncode == 0, whole.stderr[-3000:]
    # 8 batches per epoch: killed in the middle of the third epoch.
    killed = _run(tmp_path, "killed", backup, 20, balancer)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (tmp_path / "killed.npz").exists()
    resumed = _run(tmp_path, "resumed", backup, 0, balancer)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # It did resume: the last backup was taken at the end of epoch 2 (index 1).
    assert "epochs trained: [2, 3]" in resumed.stdout, resumed.stdout
    expected, got = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "resumed.npz")
    assert sorted(expected.files) == sorted(got.files)
    for key in expected.files:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-7, err_msg=key)
