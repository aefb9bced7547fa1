"""`keras-mtl bench --quality --jobs N` (keras_mtl.benchmarks.parallel): the plan, the worker
module and a failing worker."""

import importlib.util
import os
import subprocess
import sys

import pytest

from keras_mtl.benchmarks import parallel


def test_plan_puts_the_longest_experiment_alone_and_keeps_order():
    assert parallel.plan(["census", "synthetic", "funnel"], 2) == [
        ["census"], ["synthetic", "funnel"]]
    assert parallel.plan(["funnel", "census"], 1) == [["funnel", "census"]]
    assert parallel.plan(["census", "synthetic", "funnel"], 8) == [
        ["census"], ["synthetic"], ["funnel"]]
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        parallel.plan(["census"], 0)


def test_workers_run_this_module():
    # The parent starts `python -m parallel.MODULE`: it must be this file, runnable as a script.
    spec = importlib.util.find_spec(parallel.MODULE)
    assert os.path.samefile(spec.origin, parallel.__file__)
    done = subprocess.run([sys.executable, "-m", parallel.MODULE, "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--experiments" in done.stdout and parallel.MODULE in done.stdout


def test_a_failing_process_stops_the_others_and_names_its_experiment(tmp_path):
    missing = str(tmp_path / "no-census-here.gz")
    lines = []
    with pytest.raises(RuntimeError, match=r"(?s)process for census failed.*No census-income file"):
        parallel.run(["census", "synthetic"], jobs=2, quick=True, census_path=missing,
                     log=lines.append)
    # The synthetic process was stopped rather than waited for: its last row never finished
    # (importing TensorFlow and training two rows takes it far longer than census takes to fail).
    assert not any("p=0.5 mmoe" in line for line in lines)
