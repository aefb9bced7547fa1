"""Training throughput of balancers, as ratios to equal weighting measured in the same run."""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

# Besides every registered balancer at its default level: ew at the gradient levels (the cost of
# obtaining per-task gradients, with nothing to balance), a few methods at their other level, and
# the every-k wrapper (the cost of a weighting recomputed every 10 steps).
EXTRA_SPECS = ("ew@representation", "ew@parameters", "multibalance@parameters",
               "gradcraft@representation", "mgda@representation", "nash_mtl*10", "upgrad*10")


def default_balancers() -> tuple[str, ...]:
    from keras_mtl import balancers

    names = [n for n in balancers.available() if not n.startswith("_") and n != "ew"]
    return ("ew", *EXTRA_SPECS[:2], *sorted(names + list(EXTRA_SPECS[2:])))


@dataclass
class BenchRow:
    balancer: str
    level: str
    examples_per_second: float
    ratio_to_ew: float
    step_ms: float
    compile_seconds: float


def parse_balancer(spec: str):
    """`"name"`, `"name@level"`, `"name*k"` or `"name@level*k"` (weights recomputed every k
    steps) → `(name, kwargs)`."""
    spec, _, every = spec.partition("*")
    name, _, level = spec.partition("@")
    kwargs = {"level": level} if level else {}
    if every:
        kwargs["every"] = int(every)
    return name, kwargs


def make_balancer(spec: str, num_tasks: int):
    from keras_mtl import balancers

    name, kwargs = parse_balancer(spec)
    if name == "static":
        kwargs["weights"] = [1.0 / (k + 1) for k in range(num_tasks)]
    return balancers.get(name, **kwargs)


def _model(architecture: str, data, experts: int, units: int):
    import keras_mtl as km

    backbone = {
        "mmoe": lambda: km.layers.MMoE(num_experts=experts, expert_units=[units]),
        "cgc": lambda: km.layers.CGC(shared_experts=experts // 2, task_experts=1,
                                     expert_units=[units]),
        "ple": lambda: km.layers.PLE(num_levels=2, shared_experts=experts // 2, task_experts=1,
                                     expert_units=[units]),
        "shared-bottom": lambda: km.layers.SharedBottom(units=[units]),
    }[architecture]()
    return km.MultiTaskModel(features=data.features, tasks=data.tasks, backbone=backbone,
                             tower_units=[32])


def measure(model, x, y, steps: int, windows: int, warmup: int) -> tuple[float, float]:
    """Returns (median seconds per step over `windows` windows of `steps`, compile seconds)."""
    start = time.perf_counter()
    model.train_on_batch(x, y)  # traces and compiles
    compile_seconds = time.perf_counter() - start
    for _ in range(warmup):
        model.train_on_batch(x, y)
    per_step = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            logs = model.train_on_batch(x, y, return_dict=True)
        float(logs["loss"])  # wait for the last step
        per_step.append((time.perf_counter() - start) / steps)
    return statistics.median(per_step), compile_seconds


def run(
    balancers=None,
    architecture: str = "mmoe",
    num_tasks: int = 4,
    batch_size: int = 2048,
    experts: int = 8,
    units: int = 256,
    steps: int = 10,
    windows: int = 5,
    warmup: int = 3,
    jit_compile: bool = True,
    seed: int = 0,
) -> dict:
    """Throughput of every balancer on one architecture and data set; `ew` first as the baseline."""
    from keras_mtl import datasets

    specs = list(balancers or default_balancers())
    if "ew" in specs:
        specs.remove("ew")
    specs.insert(0, "ew")
    data = datasets.make_synthetic(num_examples=batch_size, num_tasks=num_tasks, correlation=0.5,
                                   seed=seed, fractions=(1.0, 0.0, 0.0))
    (x, y), = data.as_tf_dataset("train", batch_size=batch_size, shuffle=False).take(1)
    rows, baseline = [], None
    for spec in specs:
        keras.utils.set_random_seed(seed)
        model = _model(architecture, data, experts, units)
        balancer = make_balancer(spec, num_tasks)
        model.compile(optimizer="adam", balancer=balancer, jit_compile=jit_compile)
        seconds, compile_seconds = measure(model, x, y, steps, windows, warmup)
        baseline = baseline or seconds
        rows.append(BenchRow(
            balancer=_label(spec), level=balancer.level,
            examples_per_second=batch_size / seconds, ratio_to_ew=baseline / seconds,
            step_ms=1000 * seconds, compile_seconds=compile_seconds,
        ))
        del model
    return {
        "config": {
            "architecture": architecture, "num_tasks": num_tasks, "batch_size": batch_size,
            "experts": experts, "expert_units": units, "jit_compile": jit_compile,
            "steps_per_window": steps, "windows": windows, "warmup_steps": warmup,
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": cpu_count(), "tensorflow": tf.__version__,
                    "keras": keras.__version__},
        "rows": [asdict(r) for r in rows],
    }


def _label(spec: str) -> str:
    name, _, every = spec.partition("*")
    return name.partition("@")[0] + (f" (every {every})" if every else "")


def cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def format_markdown(result: dict) -> str:
    c = result["config"]
    lines = [
        f"{c['architecture']} ({c['experts']} experts × {c['expert_units']}), K = {c['num_tasks']}, "
        f"batch {c['batch_size']}, XLA {'on' if c['jit_compile'] else 'off'}, "
        f"{result['machine']['cpu_count']} CPU cores; median of {c['windows']} windows of "
        f"{c['steps_per_window']} steps",
        "",
        "| balancer | level | examples/s | × ew | ms/step |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['balancer']} | {r['level']} | {r['examples_per_second']:,.0f} | "
                     f"{r['ratio_to_ew']:.2f} | {r['step_ms']:.1f} |")
    return "\n".join(lines)


def save_json(result: dict, path: str) -> None:
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2, default=lambda o: float(np.asarray(o)))
