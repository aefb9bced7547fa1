"""`keras-mtl bench --quality --jobs N`: the quality experiments in N processes side by side.

The synthetic sweep and the funnel train small models at small batches, which leave most of a
second core idle; run beside Census-Income on the 2-core VM, the synthetic sweep slowed Census by
about a fifth and itself by about a twentieth (same figures, to the last digit: every run seeds
itself). Experiments, not rows, are the unit: a process runs whole experiments, so a row's
learning-rate pick and single-task baseline stay in one process and the results are exactly
those of a single-process run.

Each process is `python -m keras_mtl.benchmarks.parallel` (this module's `main`, `MODULE`): it
runs `quality.run` on its experiments and writes the result as JSON, which the parent merges.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

# What each process runs with `python -m` (the `__main__` block below).
MODULE = "keras_mtl.benchmarks.parallel"
# Minutes each experiment took alone at the default budget (docs/quality.md, 2-core VM): the
# weights for spreading experiments over processes, largest first.
EXPECTED_MINUTES = {"census": 29.0, "synthetic": 15.0, "funnel": 9.0, "movielens": 10.0,
                    "watch-time": 5.0, "architectures": 30.0}


def plan(experiments: Sequence[str], jobs: int) -> list[list[str]]:
    """Experiments grouped into at most `jobs` processes: longest first, each onto the process
    with the least expected work so far (in the given order within a process)."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}.")
    groups: list[list[str]] = [[] for _ in range(min(jobs, len(experiments)))]
    loads = [0.0] * len(groups)
    for name in sorted(experiments, key=lambda e: -EXPECTED_MINUTES.get(e, 1.0)):
        target = loads.index(min(loads))
        groups[target].append(name)
        loads[target] += EXPECTED_MINUTES.get(name, 1.0)
    order = {name: i for i, name in enumerate(experiments)}
    return [sorted(g, key=order.__getitem__) for g in groups if g]


def run(experiments: Sequence[str], jobs: int, quick: bool = False, seeds: int | None = None,
        census_path: str | None = None, balancers: Sequence[str] | None = None,
        movielens_path: str | None = None, log: Callable[[str], None] = print) -> dict:
    """`quality.run`'s result, computed by up to `jobs` processes. Progress lines of every
    process go to `log` as they come. If a process fails, the others are stopped and the error
    names its experiments and ends with its last output."""
    # Imported here, not at the top: `plan` and the parent's process handling need no Keras.
    from keras_mtl.benchmarks import quality, report

    quality.check_experiments(experiments)  # before any process starts
    groups = plan(experiments, jobs)
    if len(groups) <= 1:
        result = quality.run(experiments, quick=quick, seeds=seeds, census_path=census_path,
                             balancers=balancers, movielens_path=movielens_path, log=log)
        return {**result, "jobs": 1}
    start = time.perf_counter()
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, once per process
    with tempfile.TemporaryDirectory(prefix="keras_mtl_quality_") as folder:
        workers = []
        for index, group in enumerate(groups):
            output = os.path.join(folder, f"{index}.json")
            command = [sys.executable, "-m", MODULE,
                       "--experiments", ",".join(group), "--json", output]
            if quick:
                command.append("--quick")
            if seeds is not None:
                command += ["--seeds", str(seeds)]
            if census_path is not None:
                command += ["--data-path", os.path.abspath(census_path)]
            if movielens_path is not None:
                command += ["--movielens-path", os.path.abspath(movielens_path)]
            if balancers:
                command += ["--balancers", ",".join(balancers)]
            stderr = open(os.path.join(folder, f"{index}.err"), "w+")  # noqa: SIM115
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                       env=env)
            tail: list[str] = []
            forward = threading.Thread(target=_forward, args=(process.stdout, log, tail),
                                       daemon=True)
            forward.start()
            workers.append((group, process, output, stderr, forward, tail))
        try:
            _wait(workers)
        finally:
            for _, process, _, stderr, forward, _ in workers:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                forward.join()
                stderr.close()
        result = {"quick": quick, "machine": report.machine(), "jobs": len(groups)}
        for group, _, output, _, _, _ in workers:
            with open(output) as handle:
                part = json.load(handle)
            for name in group:
                result[name] = part[name]
    result["seconds"] = time.perf_counter() - start
    return result


def _forward(stream, log: Callable[[str], None], tail: list[str]) -> None:
    for line in stream:
        line = line.rstrip("\n")
        log(line)
        tail.append(line)
        del tail[:-20]


def _wait(workers) -> None:
    """Until every process has ended; the first failure stops the rest and raises."""
    running = list(workers)
    while running:
        for worker in list(running):
            group, process, _, stderr, forward, tail = worker
            code = process.poll()
            if code is None:
                continue
            running.remove(worker)
            if code != 0:
                forward.join()
                stderr.seek(0)
                errors = stderr.read().strip().splitlines()[-20:]
                last = "\n".join(tail[-5:] + errors)
                raise RuntimeError(
                    f"The quality process for {','.join(group)} failed (exit code {code}); "
                    f"its last output:\n{last}")
        time.sleep(0.2)


def main(argv: Sequence[str] | None = None) -> int:
    """One process of `run`: its experiments' `quality.run` result, written to `--json`."""
    from keras_mtl.benchmarks import quality, report

    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description="One process of keras-mtl bench --quality --jobs.")
    parser.add_argument("--experiments", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--data-path", default=None)
    parser.add_argument("--balancers", default=None)
    parser.add_argument("--movielens-path", default=None)
    args = parser.parse_args(argv)
    result = quality.run(args.experiments.split(","), quick=args.quick, seeds=args.seeds,
                         census_path=args.data_path, movielens_path=args.movielens_path,
                         balancers=args.balancers.split(",") if args.balancers else None,
                         log=lambda line: print(line, flush=True))
    report.save_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
