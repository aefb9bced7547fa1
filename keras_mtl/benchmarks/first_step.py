"""`keras-mtl bench --first-step`: how long a new user waits for the quickstart's first step.

Each balancer runs in a fresh Python process (nothing traced, compiled or cached before it), which
times what a user's script goes through: `import keras_mtl`, loading the data, building and
compiling the quickstart's model, and `fit` up to the end of its first batch (tracing, graph
optimisation or XLA compilation, and the step itself); then the median seconds per step of the
next batches, so the first step can be read against steady-state speed.

The model is the README's quickstart: PLE (2 levels, 2 shared experts and 1 per task, experts of
[64], towers of [32]), Adam, batch 256, on Census-Income where its file is given (`census_path`)
and on `keras-mtl train`'s synthetic data otherwise; `jit_compile` as `compile()` leaves it
unless set (Keras' "auto": no XLA on a CPU-only machine). With `architecture`, it is instead the
throughput benchmark's model (`throughput.build_model`: that architecture, `num_tasks` tasks,
`experts` × `units`, towers of 32) fed its one synthetic batch of `batch_size` rows, as `keras-mtl
bench` times it, and the target is the many-task one (`MANY_TASKS_TARGET_SECONDS`).

`python -m keras_mtl.benchmarks.first_step --balancer NAME [...]` runs one (`run` starts each with
`PROGRAM`, which also times the import); it prints its result as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

MODULE = "keras_mtl.benchmarks.first_step"
# What each fresh process runs: the clock starts before anything of ours is imported (`python -m`
# would import the package, and TensorFlow with it, before the module's first line).
PROGRAM = ("import sys, time; began = time.perf_counter(); "
           f"from {MODULE} import main; main(sys.argv[1:], began)")
# A representative set: losses-level, representation-level and parameter-level methods, and the
# parameter-level ones whose steps trace the most (pairwise projections, solvers).
DEFAULT_BALANCERS = ("ew", "uw", "dwa", "multibalance", "gradnorm", "mgda@representation",
                     "upgrad@representation", "mgda", "upgrad", "pcgrad", "gradvac", "cagrad",
                     "nash_mtl", "famo")
# The quickstart's promise: training starts within this many seconds of `fit` on 2 cores.
TARGET_SECONDS = 5.0
# The benchmark's MMoE at K = 32 (issue #19): no balancer's first step over this, with XLA.
MANY_TASKS_TARGET_SECONDS = 30.0
STEADY_STEPS = 20


def _benchmark_model(architecture: str, num_tasks: int, batch_size: int, experts: int,
                     units: int):
    """`(model, dataset, tasks)`: the throughput benchmark's model and its batch, repeated."""
    import tensorflow as tf

    from keras_mtl.benchmarks import throughput

    features, tasks, x, y = throughput.bench_data(num_tasks, batch_size, seed=0)
    model = throughput.build_model(architecture, features, tasks, experts, units)
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat(STEADY_STEPS + 1)
    return model, dataset, tasks


def measure(balancer: str, census_path: str | None = None, jit_compile: bool | None = None,
            batch_size: int | None = None, began: float | None = None,
            architecture: str | None = None, num_tasks: int = 4, experts: int = 8,
            units: int = 256) -> dict:
    """Runs in the calling process (which should be fresh): see the module docstring. `began`:
    the `time.perf_counter()` before `keras_mtl` was imported (`PROGRAM` takes it first thing),
    so that the import is timed; by default now."""
    began = time.perf_counter() if began is None else began
    import keras

    import keras_mtl as km
    from keras_mtl.benchmarks import presets

    imported = time.perf_counter()
    if architecture is not None:
        batch_size = batch_size or 2048
        model, dataset, tasks = _benchmark_model(architecture, num_tasks, batch_size, experts,
                                                 units)
        loaded = time.perf_counter()
        data_name = f"{architecture}, K = {num_tasks}, {experts} × {units}, batch {batch_size}"
    else:
        batch_size = batch_size or 256
        if census_path:
            data = km.datasets.load_census_income(path=census_path)
        else:
            data = km.datasets.make_synthetic(num_examples=20_000, correlation=0.5, seed=0)
        loaded = time.perf_counter()
        model = km.MultiTaskModel(
            features=data.features, tasks=data.tasks,
            backbone=km.layers.PLE(num_levels=2, shared_experts=2, task_experts=1,
                                   expert_units=[64]),
            tower_units=[32])
        dataset = data.as_tf_dataset("train", batch_size=batch_size).take(STEADY_STEPS + 1)
        tasks = data.tasks
        data_name = "census" if census_path else "synthetic"
    options = {} if jit_compile is None else {"jit_compile": jit_compile}
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  balancer=presets.make_balancer(balancer, len(tasks)), **options)
    built = time.perf_counter()
    batch_ends = []

    class BatchClock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_ends.append(time.perf_counter())

    start = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0, callbacks=[BatchClock()])
    steady = [b - a for a, b in zip(batch_ends, batch_ends[1:], strict=False)]
    return {"balancer": presets.balancer_label(balancer),
            "level": model.balancer.level,
            "data": data_name,
            "xla": bool(model.jit_compile),
            "import_seconds": imported - began,
            "data_seconds": loaded - imported,
            "build_seconds": built - loaded,
            "first_step_seconds": batch_ends[0] - start,
            "steady_step_ms": 1000 * statistics.median(steady) if steady else None}


def run(balancers: Sequence[str] = DEFAULT_BALANCERS, census_path: str | None = None,
        jit_compile: bool | None = None, log: Callable[[str], None] = print,
        architecture: str | None = None, num_tasks: int = 4, batch_size: int | None = None,
        experts: int = 8, units: int = 256) -> dict:
    """`measure` for every balancer, each in its own fresh process, one after another."""
    from keras_mtl.benchmarks import report

    rows = []
    for i, spec in enumerate(balancers):
        command = [sys.executable, "-c", PROGRAM, "--balancer", spec]
        if census_path:
            command += ["--census-path", census_path]
        if jit_compile is not None:
            command += ["--jit-compile", str(jit_compile).lower()]
        if architecture is not None:
            command += ["--model", architecture, "--tasks", str(num_tasks), "--num-experts",
                        str(experts), "--expert-units", str(units)]
        if batch_size is not None:
            command += ["--batch-size", str(batch_size)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"The first-step run of {spec!r} failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        log(f"  [{i + 1}/{len(balancers)}] {row['balancer']} ({row['level']}): first step "
            f"{row['first_step_seconds']:.1f} s, then {row['steady_step_ms']:.1f} ms/step")
    target = TARGET_SECONDS if architecture is None else MANY_TASKS_TARGET_SECONDS
    return {"machine": report.machine(), "target_seconds": target, "rows": rows}


def format_markdown(result: dict) -> str:
    machine = result["machine"]
    rows = result["rows"]
    data = rows[0]["data"] if rows else "synthetic"
    model = {"census": "the README quickstart's PLE on Census-Income, batch 256",
             "synthetic": "the README quickstart's PLE on the synthetic data of keras-mtl "
                          "train, batch 256"}.get(data, f"the throughput benchmark's {data}")
    over = [f"{r['balancer']}@{r['level']}" for r in rows
            if r["first_step_seconds"] > result["target_seconds"]]
    lines = [f"{machine['cpu_count']} CPU cores, TensorFlow {machine['tensorflow']}, Keras "
             f"{machine['keras']}; {model}, XLA {'on' if rows and rows[0]['xla'] else 'off'}; "
             "each row a fresh "
             "process. first step: from `fit()` to the end of its first batch (tracing, graph "
             f"optimisation, compilation, one step); steady: median of the next {STEADY_STEPS} "
             "steps.", "",
             "| balancer | level | import s | data s | build + compile s | first step s "
             "| steady ms/step |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['balancer']} | {r['level']} | {r['import_seconds']:.1f} | "
                     f"{r['data_seconds']:.1f} | {r['build_seconds']:.1f} | "
                     f"{r['first_step_seconds']:.1f} | {r['steady_step_ms']:.1f} |")
    lines += ["", f"Over the {result['target_seconds']:.0f} s target: "
              + (", ".join(over) if over else "none") + "."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, began: float | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("--balancer", default="ew")
    parser.add_argument("--census-path", default=None)
    parser.add_argument("--jit-compile", default=None, choices=("true", "false"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-experts", type=int, default=8)
    parser.add_argument("--expert-units", type=int, default=256)
    args = parser.parse_args(argv)
    jit = None if args.jit_compile is None else args.jit_compile == "true"
    print(json.dumps(measure(args.balancer, args.census_path, jit, batch_size=args.batch_size,
                             began=began, architecture=args.model, num_tasks=args.tasks,
                             experts=args.num_experts, units=args.expert_units)))


if __name__ == "__main__":
    main()
