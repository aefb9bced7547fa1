"""MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 (TF_CONFIG): the weights
after training match a single-process run on the same global batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.distribute.mirrored_strategy_test import BALANCERS, single_device_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = textwrap.dedent("""
    import os, sys
    import numpy as np
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TensorFlow op
    import keras
    from tests.distribute import mirrored_strategy_test as case
    out = {}
    for balancer in sys.argv[2].split(","):
        keras.utils.set_random_seed(7)
        initial = case._model(balancer).get_weights()
        with strategy.scope():
            model = case._model(balancer)
        model.set_weights(initial)
        model.fit(case._data(), epochs=1, verbose=0, shuffle=False)
        for i, w in enumerate(model.weights):
            out[f"{balancer}/{i}"] = np.asarray(w)
    np.savez(sys.argv[1], **out)
""")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_worker_processes_match_one_process(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                     "task": {"type": "worker", "index": index}}),
                   PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        processes.append(subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"worker{index}.npz"),
             ",".join(BALANCERS)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    for process in processes:
        try:
            output, _ = process.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail("multi-worker training did not finish in 7 minutes")
        assert process.returncode == 0, output[:6000]
    workers = [np.load(tmp_path / f"worker{index}.npz") for index in range(2)]
    for balancer in BALANCERS:
        single, _ = single_device_run(balancer)
        for i, (path, expected) in enumerate(single):
            for worker in workers:
                np.testing.assert_allclose(worker[f"{balancer}/{i}"], expected, rtol=1e-4,
                                           atol=1e-5, err_msg=f"{balancer}: {path}")
