"""`keras-mtl bench --streaming ROWS[,ROWS...]`: training data streamed from Parquet shards.

For each row count the benchmark writes Parquet shards of a ranker's columns (generated shard by
shard, so writing is bounded too), then, in a fresh process each, measures:

- the input pipeline alone (`keras_mtl.data.from_files`, shuffled through its 100,000-row buffer,
  batches of 2,048, lookups and list padding included): examples/s over one full pass, and the
  process's peak resident memory (`ru_maxrss`), which should not grow with the row count;
- `read_sample` + `FeatureSpec.adapt`: a 100,000-row uniform sample in one pass, then the
  vocabularies and statistics from it (bounded memory), in seconds;
- the `ew` MMoE training step on the same features (XLA, batch 2,048): the examples/s the pipeline
  has to keep up with.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np

MODULE = "keras_mtl.benchmarks.streaming"
SHARD_ROWS = 500_000
NUM_NUMERIC = 16
USERS = 50_000
ITEMS = 1_000_000
HISTORY = 20


def spec_and_tasks(vocabulary: Sequence[str] | None = None):
    from keras_mtl.features import Categorical, FeatureSpec, IntegerId, Numeric, Sequence
    from keras_mtl.tasks import Task

    features = [*(Numeric(f"x{i}") for i in range(NUM_NUMERIC)),
                Categorical("user", vocabulary=vocabulary, embedding_dim=16),
                IntegerId("item_id", num_ids=ITEMS, embedding_dim=16),
                Sequence("hist", max_length=HISTORY, shares_embedding_with="item_id")]
    return FeatureSpec(features), [Task("click"), Task("buy", sample_space="click")]


def write_shards(folder: str, rows: int, seed: int = 0, shard_rows: int = SHARD_ROWS) -> list[str]:
    """Parquet shards of `rows` rows in `folder`: 16 float numerics, a string user id, an item
    id, a history of 0–20 item ids (an Arrow list column), click and buy (NaN off clicks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    users = np.asarray([f"u{i}" for i in range(USERS)], dtype=object)
    paths = []
    for index, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        lengths = rng.integers(0, HISTORY + 1, n)
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
        click = (rng.random(n) < 0.2).astype(np.float32)
        buy = np.where(click > 0, (rng.random(n) < 0.1).astype(np.float32), np.nan)
        table = pa.table({
            **{f"x{i}": rng.normal(size=n).astype(np.float32) for i in range(NUM_NUMERIC)},
            "user": users[rng.integers(0, USERS, n)],
            "item_id": rng.integers(0, ITEMS, n),
            "hist": pa.ListArray.from_arrays(pa.array(offsets),
                                             pa.array(rng.integers(0, ITEMS, offsets[-1]))),
            "click": click, "buy": buy.astype(np.float32),
        })
        path = os.path.join(folder, f"part-{index:05d}.parquet")
        pq.write_table(table, path, row_group_size=65_536)
        paths.append(path)
    return paths


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def stream(folder: str, batch_size: int = 2048) -> dict:
    """One shuffled pass of `from_files` over `folder`, and a sample-then-adapt; in this process."""
    from keras_mtl.data import from_files, read_sample

    start = time.perf_counter()
    sample = read_sample(folder, max_rows=100_000, seed=0)
    spec, tasks = spec_and_tasks()
    spec = spec.adapt(sample)
    adapt_seconds = time.perf_counter() - start
    dataset = from_files(folder, spec, tasks, batch_size=batch_size, shuffle=True, seed=0)
    rows, start = 0, time.perf_counter()
    for _, labels in dataset:
        rows += int(labels["click"].shape[0])
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "examples_per_second": rows / seconds,
            "peak_resident_mib": _peak_mib(), "sample_and_adapt_seconds": adapt_seconds,
            "vocabulary": list(spec["user"].vocabulary)}


def step(folder: str, vocabulary: Sequence[str], batch_size: int = 2048, steps: int = 10,
         windows: int = 3) -> dict:
    """The `ew` MMoE step (8 experts × 256, XLA) on one batch of these features: examples/s."""
    import keras

    from keras_mtl.benchmarks import presets
    from keras_mtl.data import from_files

    spec, tasks = spec_and_tasks(vocabulary)
    x, y = next(iter(from_files(folder, spec, tasks, batch_size=batch_size)))
    keras.utils.set_random_seed(0)
    model = presets.build_model("mmoe", spec, tasks, expert_units=[256], num_experts=8,
                                tower_units=[32])
    model.compile(optimizer="sgd", jit_compile=True)
    for _ in range(3):
        model.train_on_batch(x, y)
    per_step = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            loss = model.train_on_batch(x, y, return_dict=True)["loss"]
        float(np.asarray(loss))
        per_step.append((time.perf_counter() - start) / steps)
    return {"examples_per_second": batch_size / float(np.median(per_step))}


def _in_fresh_process(*args: str) -> dict:
    """`python -m keras_mtl.benchmarks.streaming ARGS` (so that each peak memory is its own)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", MODULE, *args], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"streaming benchmark process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(row_counts: Sequence[int], batch_size: int = 2048,
        log: Callable[[str], None] = print) -> dict:
    results = []
    for rows in row_counts:
        with tempfile.TemporaryDirectory(prefix="keras_mtl_stream_") as folder:
            start = time.perf_counter()
            write_shards(folder, rows)
            written = time.perf_counter() - start
            size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
            log(f"  {rows:,} rows: {size / 2**20:,.0f} MiB of Parquet written in {written:.0f} s")
            streamed = _in_fresh_process("stream", folder, str(batch_size))
            vocabulary = os.path.join(folder, "_vocabulary.json")  # "_": not a data file
            with open(vocabulary, "w") as handle:
                json.dump(streamed.pop("vocabulary"), handle)
            log(f"  {rows:,} rows: pipeline {streamed['examples_per_second']:,.0f} examples/s, "
                f"peak {streamed['peak_resident_mib']:,.0f} MiB")
            if not results:  # the step does not depend on the row count: measured once
                stepped = _in_fresh_process("step", folder, str(batch_size), vocabulary)
                log(f"  ew MMoE step: {stepped['examples_per_second']:,.0f} examples/s")
            results.append({"rows": rows, "parquet_mib": size / 2**20, "write_seconds": written,
                            **streamed})
    step_rate = stepped["examples_per_second"]
    for result in results:
        result["pipeline_over_step"] = result["examples_per_second"] / step_rate
    return {"batch_size": batch_size, "step_examples_per_second": step_rate, "runs": results}


def format_markdown(result: dict) -> str:
    lines = [f"Input pipeline (`from_files`, Parquet shards of {SHARD_ROWS:,} rows, shuffled "
             f"through a 100,000-row buffer, batch {result['batch_size']}) against the ew MMoE "
             f"step on the same features ({result['step_examples_per_second']:,.0f} examples/s, "
             "XLA); each figure from a fresh process.", "",
             "| rows | Parquet MiB | pipeline examples/s | × step | peak resident MiB | "
             "sample + adapt s |", "|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['rows']:,} | {r['parquet_mib']:,.0f} | {r['examples_per_second']:,.0f} "
                     f"| {r['pipeline_over_step']:.1f} | {r['peak_resident_mib']:,.0f} | "
                     f"{r['sample_and_adapt_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[0] == "stream":
        print(json.dumps(stream(argv[1], int(argv[2]))))
    elif argv[0] == "step":
        with open(argv[3]) as handle:
            print(json.dumps(step(argv[1], json.load(handle), int(argv[2]))))
    else:
        raise SystemExit(f"usage: python -m {MODULE} stream|step FOLDER BATCH [VOCABULARY.json]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
