"""`keras-mtl bench`: training throughput and peak memory of balancers, as ratios to equal
weighting measured in the same run on the same model and data.

Besides one row per balancer, every configuration measures the *floor* of parameter-level
balancing: one forward pass, K backward passes through the shared trunk (one per task, from the
cut) and one optimizer update, with no flattening, no solver and no bookkeeping. It is timed as a
bare `tf.function` beside a bare plain step (forward, one backward, update), so Keras' per-step
work (metrics, logs) cancels out: the floor's ratio is bare plain / bare floor, and a
parameter-level row's `× floor` is its `× ew` over the floor's ratio — 1.0 means the method costs
nothing beyond the gradients it cannot avoid.

Peak memory comes from TensorFlow's allocator statistics, which exist on CPU only with its BFC
allocator (`TF_CPU_ALLOCATOR_USE_BFC=true`; `keras-mtl bench` sets it before TensorFlow allocates
anything, with `report.cpu_allocator_statistics`); without them the memory columns are empty. A
row's figure is the peak allocated during its build, compile and timed steps minus what was
allocated before it started.
"""

from __future__ import annotations

import gc
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from keras_mtl.benchmarks import presets, report

# Besides every registered balancer at its default level: ew at the gradient levels (the cost of
# obtaining per-task gradients, with nothing to balance), a few methods at their other level, and
# the every-k wrapper (the cost of a weighting recomputed every 10 steps).
EXTRA_SPECS = ("ew@representation", "ew@parameters", "multibalance@parameters",
               "gradcraft@representation", "mgda@representation", "nash_mtl*10", "upgrad*10")


def default_balancers() -> tuple[str, ...]:
    from keras_mtl import balancers

    names = [n for n in balancers.available() if not n.startswith("_") and n != "ew"]
    return ("ew", *EXTRA_SPECS[:2], *sorted(names + list(EXTRA_SPECS[2:])))


# The large-embedding configuration: methods that run at the representation level (where an
# embedding table's gradient is never formed per task) plus one parameter-level method (tables are
# left out of its per-task matrix unless `dense_embedding_gradients=True`). It trains with SGD,
# which keeps no state per table row: Adam's two and Adagrad's one table-sized slot variables are
# updated every step (timed once by hand without XLA, a bare update of 2,048 rows of a 10M × 16
# table: SGD 0.53 s, Adagrad 1.5 s, Adam 3.7 s) and would bury every other cost.
EMBEDDING_SPECS = ("ew@representation", "multibalance", "gradnorm", "mgda@representation",
                   "gradcraft@representation", "uw", "famo", "mgda")


@dataclass
class BenchRow:
    balancer: str
    level: str
    examples_per_second: float
    ratio_to_ew: float
    step_ms: float
    compile_seconds: float
    peak_memory_mb: float | None = None
    memory_ratio_to_ew: float | None = None
    # Parameter level only: this row's `ratio_to_ew` over the floor's (see the module docstring).
    ratio_to_floor: float | None = None
    # The lowest and highest `× ew` of its window pairs (see `interleaved`), and whether that
    # spread is wider than the row's distance from 1: then the ratio is not a result.
    ratio_span: tuple[float, float] | None = None
    noisy: bool = False


# `--quick`: a small model, a few balancers (one per kind of cost: loss-level, representation
# level, a solver at each level) and short windows, the batch capped at 256: about a minute on two
# quiet cores. Three window pairs per row, so each ratio has a spread to be judged by.
QUICK_SETTINGS = {"batch_size": 256, "experts": 4, "units": 32, "steps": 20, "windows": 3,
                  "warmup": 1}
QUICK_BALANCERS = ("ew@representation", "uw", "multibalance", "mgda@representation", "upgrad")


def settings(batch_size: int, experts: int, units: int, steps: int, windows: int,
             quick: bool = False) -> dict:
    """`run`'s sizes from the CLI's flags; `quick` replaces them with `QUICK_SETTINGS` (keeping a
    smaller batch than 256)."""
    kwargs = dict(batch_size=batch_size, experts=experts, units=units, steps=steps,
                  windows=windows)
    if quick:
        kwargs.update(QUICK_SETTINGS, batch_size=min(batch_size, QUICK_SETTINGS["batch_size"]))
    return kwargs


def build_model(architecture: str, features, tasks, experts: int, units: int) -> keras.Model:
    """The benchmarked model: `presets.make_backbone(architecture)` with one layer of `units` per
    expert and `experts` as the expert budget, towers of 32."""
    return presets.build_model(architecture, features, tasks, expert_units=[units],
                               num_experts=experts, tower_units=[32])


# ---------------------------------------------------------------------------------- memory
def _allocator_bytes() -> tuple[int, int] | None:
    """(current, peak) bytes of the CPU allocator, or None without allocator statistics."""
    try:
        info = tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:  # "Allocator stats not available": the default CPU allocator
        return None
    return info["current"], info["peak"]


def _reset_peak() -> None:
    if _allocator_bytes() is not None:
        tf.config.experimental.reset_memory_stats("CPU:0")


def _peak_since(start: tuple[int, int] | None) -> float | None:
    now = _allocator_bytes()
    if start is None or now is None:
        return None
    return (now[1] - start[0]) / 2**20


class Stepper:
    """One configuration's training step, `step()` → a tensor, timed in windows."""

    def __init__(self, step: Callable[[], tf.Tensor]):
        self.step = step

    def first(self, warmup: int) -> float:
        """Runs the first step (tracing, compilation) and `warmup` more; returns the first's
        seconds: the time a user waits before training starts."""
        start = time.perf_counter()
        float(np.asarray(self.step()))
        seconds = time.perf_counter() - start
        for _ in range(warmup):
            self.step()
        return seconds

    def window(self, steps: int) -> float:
        """Seconds per step over `steps` consecutive steps, after one untimed step.

        The untimed step absorbs what switching from another model's window costs (caches, the
        allocator, thread pools), so a window's time does not depend on what ran before it. In
        `interleaved` the baseline sometimes follows itself (the junction of two pairs) and
        sometimes a row, by the row's index: without this step, MGDA-UB and MGDA at the cut —
        one HLO under two names — read 0.77–0.80× and 0.89–0.90× `ew` at MMoE K = 16, whichever
        was listed first (`keras-mtl bench`, by hand)."""
        float(np.asarray(self.step()))
        start = time.perf_counter()
        for _ in range(steps):
            result = self.step()
        float(np.asarray(result))  # wait for the last step
        return (time.perf_counter() - start) / steps


# The baseline's windows may spread this much (max − min over median) before a run says that
# its machine was too busy for its ratios.
DRIFT_WARNING = 0.15


def interleaved(baseline: Stepper, rows: Sequence[Stepper], steps: int, windows: int,
                log: Callable[[str], None] | None = None) -> dict:
    """Times every row against the baseline in adjacent window pairs, `windows` rounds over all
    rows, alternating which of the pair goes first, so that drift on a shared machine (another
    process, a thermal or frequency change) hits a row and its baseline alike instead of the
    rows timed late.

    A row's ratio is the median over its pairs of baseline seconds / row seconds (its `× ew`),
    its `span` the lowest and highest pair ratio, and it is `noisy` when that spread (highest −
    lowest) exceeds its distance from 1 — the windows disagree by more than the effect reported —
    or when there is a single pair (no spread to judge). The baseline's seconds are the median of
    all its windows; `baseline_drift` is their (max − min) / median."""
    ratios = [[] for _ in rows]
    seconds = [[] for _ in rows]
    base = []
    for round_ in range(windows):
        for i, row in enumerate(rows):
            if (round_ + i) % 2 == 0:
                b, r = baseline.window(steps), row.window(steps)
            else:
                r, b = row.window(steps), baseline.window(steps)
            base.append(b)
            seconds[i].append(r)
            ratios[i].append(b / r)
        if log is not None:
            log(f"  timed round {round_ + 1}/{windows}")
    out = []
    for pair_ratios, row_seconds in zip(ratios, seconds, strict=True):
        ratio = statistics.median(pair_ratios)
        low, high = min(pair_ratios), max(pair_ratios)
        out.append({"ratio": ratio, "seconds": statistics.median(row_seconds),
                    "span": (low, high),
                    "noisy": len(pair_ratios) < 2 or high - low > abs(ratio - 1.0)})
    if not base:  # no rows: the baseline alone
        base = [baseline.window(steps) for _ in range(windows)]
    median = statistics.median(base)
    return {"baseline_seconds": median, "baseline_windows": base,
            "baseline_drift": (max(base) - min(base)) / median, "rows": out}


def floor_step(model, jit_compile: bool, per_task: bool = True) -> Callable:
    """A bare training step `(x, y) -> loss`, using only the model's own forward and loss code
    (`model.forward`, `model.task_loss_function`), so it computes what `train_step` does up to
    the balancing.

    `per_task=True`, the floor of parameter-level balancing: one forward pass, one backward pass
    per task from the cut through the shared trunk, and one optimizer update of their sum (heads
    and embedding tables get one pass of the summed loss). `per_task=False`: plain training, one
    backward pass of the summed loss. Neither flattens, solves or updates metrics."""
    partition = model.partition
    variables = list(partition.variables)
    # The variables a parameter-level balancer forms per-task gradients of; embedding tables left
    # out of that matrix get one pass of the summed cut gradient, as `train_step` updates them.
    trunk = list(partition.balanced)
    tables = list(partition.unbalanced_tables)
    heads = list(partition.heads)
    model.optimizer.build(variables)

    def dense(grads, targets):
        # Not `unconnected_gradients=ZERO`: its zeros_like fails on Keras variables (str dtype).
        return [tf.zeros(v.shape, v.dtype) if g is None else g
                for v, g in zip(targets, grads, strict=True)]

    @tf.function(jit_compile=jit_compile)
    def plain(x, y):
        with tf.GradientTape() as tape:
            logits = model.forward(x, training=True).logits
            terms = model.task_loss_function(y, logits, features=x)
            total = tf.reduce_sum(tf.stack(terms.weighted))
        model.optimizer.apply(dense(tape.gradient(total, variables), variables), variables)
        return total

    @tf.function(jit_compile=jit_compile)
    def floor(x, y):
        with tf.GradientTape(persistent=True) as tape:
            forward = model.forward(x, training=True, detach_cut=True, watch=tape.watch)
            cut, leaves = forward.cut, forward.leaves
            # One scalar per task, each from its own task's terms only: differentiating one
            # touches that task's head alone (not all K with zero gradients).
            losses = list(model.task_loss_function(y, forward.logits, features=x).weighted)
            total = tf.add_n(losses)
        summed_cut, summed_trunk = None, None
        for loss in losses:
            cut_grads = dense(tape.gradient(loss, leaves), leaves)
            grads = dense(tape.gradient(cut, trunk, output_gradients=cut_grads), trunk)
            summed_trunk = grads if summed_trunk is None else [
                a + b for a, b in zip(summed_trunk, grads, strict=True)]
            summed_cut = cut_grads if summed_cut is None else [
                a + b for a, b in zip(summed_cut, cut_grads, strict=True)]
        head_grads = dense(tape.gradient(total, heads), heads)
        table_grads = tape.gradient(cut, tables, output_gradients=summed_cut) if tables else []
        model.optimizer.apply(summed_trunk + table_grads + head_grads, trunk + tables + heads)
        return total

    return floor if per_task else plain


def bench_data(num_tasks: int, batch_size: int, seed: int, embedding_rows: int = 0,
               ranker: str | None = None) -> tuple:
    """One batch of the MMoE synthetic data (K tasks) as `(features, tasks, x, y)`; with
    `embedding_rows`, an `item_id` feature embedded in a table of that many rows (16 wide) whose
    ids are drawn uniformly, so a batch touches about `batch_size` distinct rows; with `ranker`,
    the ranker's features of `ranker_features` besides the synthetic ones."""
    from keras_mtl import datasets
    from keras_mtl.features import FeatureSpec, IntegerId

    data = datasets.make_synthetic(num_examples=batch_size, num_tasks=num_tasks, correlation=0.5,
                                   seed=seed, fractions=(1.0, 0.0, 0.0))
    (x, y), = data.as_tf_dataset("train", batch_size=batch_size, shuffle=False).take(1)
    features = data.features
    if ranker:
        extra, columns = ranker_features(batch_size, embedding_rows or RANKER_TABLE_ROWS, seed,
                                         strings=ranker == "strings")
        return FeatureSpec([*features, *extra]), data.tasks, dict(x, **columns), y
    if embedding_rows:
        features = FeatureSpec([*features, IntegerId("item_id", num_ids=embedding_rows,
                                                     embedding_dim=16)])
        rng = np.random.default_rng(seed)
        x = dict(x, item_id=tf.constant(rng.integers(0, embedding_rows, batch_size), tf.int64))
    return features, data.tasks, x, y


# The ranker configuration (`--ranker`): the own-ranker features of a production model.
RANKER_TABLE_ROWS = 1_000_000
RANKER_HISTORY = 50
RANKER_USERS = 10_000
RANKER_COUNTRIES = 200


def ranker_features(batch_size: int, table_rows: int, seed: int, strings: bool = True) -> tuple:
    """`(features, columns)`: a candidate `item_id` in a `table_rows` × 32 table, the user's last
    `RANKER_HISTORY` items (a `Sequence` sharing that table, DIN attention against the candidate,
    lengths uniform in 0…50), a bag of 5 tags, a 16-float pretrained user vector, and a user id and
    a country: strings through a vocabulary (`Categorical`, `RANKER_USERS` values) and a hash
    (`Hashed`, 1,000 bins) with `strings=True`, else the same values as integer ids (`IntegerId`:
    the model "fed integer ids" that the string model is compared with)."""
    from keras_mtl.features import (
        PADDING,
        Categorical,
        Hashed,
        IntegerId,
        MultiValued,
        Sequence,
        Vector,
    )

    rng = np.random.default_rng(seed)
    history = rng.integers(0, table_rows, (batch_size, RANKER_HISTORY))
    lengths = rng.integers(0, RANKER_HISTORY + 1, batch_size)
    history[np.arange(RANKER_HISTORY)[None, :] >= lengths[:, None]] = PADDING
    tags = rng.integers(0, 1000, (batch_size, 5))
    tags[rng.random((batch_size, 5)) < 0.4] = PADDING
    users = rng.integers(0, RANKER_USERS, batch_size)
    countries = rng.integers(0, RANKER_COUNTRIES, batch_size)
    features = [
        IntegerId("item_id", num_ids=table_rows, embedding_dim=32),
        Sequence("hist_item_ids", max_length=RANKER_HISTORY, shares_embedding_with="item_id",
                 pooling="attention", query="item_id"),
        MultiValued("tags", num_ids=1000, embedding_dim=8, max_length=5, pooling="mean"),
        Vector("user_vec", dim=16),
    ]
    columns = {
        "item_id": tf.constant(rng.integers(0, table_rows, batch_size), tf.int64),
        "hist_item_ids": tf.constant(history, tf.int64),
        "tags": tf.constant(tags, tf.int64),
        "user_vec": tf.constant(rng.normal(size=(batch_size, 16)), tf.float32),
    }
    if strings:
        features += [Categorical("user", vocabulary=[f"u{i}" for i in range(RANKER_USERS)],
                                 embedding_dim=16),
                     Hashed("country", num_bins=1000, embedding_dim=8)]
        columns.update(user=tf.constant([f"u{i}" for i in users]),
                       country=tf.constant([f"c{i}" for i in countries]))
    else:
        features += [IntegerId("user", num_ids=RANKER_USERS + 1, embedding_dim=16),
                     IntegerId("country", num_ids=1000, embedding_dim=8)]
        columns.update(user=tf.constant(users + 1, tf.int64),  # row 0: the OOV row, as above
                       country=tf.constant(countries, tf.int64))
    return features, columns


def lookup_throughput(features, x: dict, batches: int = 20) -> float:
    """Examples/s of the input pipeline's lookup stage alone (`LookupStage` mapped over batches of
    raw features in `tf.data`, as `fit` runs it), to compare with the step's examples/s."""
    from keras_mtl.data import with_lookups
    from keras_mtl.features.lookups import LookupStage

    dataset = with_lookups(tf.data.Dataset.from_tensors(x).repeat(batches + 2),
                           LookupStage(features)).prefetch(2)
    iterator = iter(dataset)
    next(iterator), next(iterator)  # warm-up: tables built, threads started
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    batch_size = int(tf.nest.flatten(x)[0].shape[0])
    return batches * batch_size / (time.perf_counter() - start)


def run(
    balancers: Sequence[str] | None = None,
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
    embedding_rows: int = 0,
    floor: bool = True,
    optimizer: str = "adam",
    ranker: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Throughput and peak memory of every balancer on one architecture and data set, `ew` first
    as the baseline, plus the parameter-level floor (see the module docstring).

    `ranker="strings"`/`"ids"`: the features of `ranker_features` (history, tags, vector, string
    or integer user and country). String lookups run in the input pipeline, as in `fit`: the
    timed step gets table rows (`LookupStage`), and the stage's own examples/s is reported beside
    it (`lookup_examples_per_second`)."""
    specs = list(balancers or default_balancers())
    if "ew" in specs:
        specs.remove("ew")
    specs.insert(0, "ew")
    features, tasks, x, y = bench_data(num_tasks, batch_size, seed, embedding_rows, ranker)
    lookup_rate = None
    if ranker == "strings":
        from keras_mtl.features.lookups import LookupStage

        lookup_rate = lookup_throughput(features, x)
        x = LookupStage(features)(x)  # what the pipeline hands the step
    compiled = []  # whether each model kept jit_compile (Keras drops it for non-XLA layers)

    def build(spec):
        keras.utils.set_random_seed(seed)
        model = build_model(architecture, features, tasks, experts, units)
        balancer = presets.make_balancer(spec, num_tasks)
        model.compile(optimizer=optimizer, balancer=balancer, jit_compile=jit_compile)
        compiled.append(bool(model.jit_compile))
        return model, balancer

    # A first, unrecorded model absorbs one-time costs (allocator pools, tracing caches) that
    # would otherwise land on ew's first step.
    model, _ = build("ew")
    model.train_on_batch(x, y)
    del model
    gc.collect()

    def prepare(index, spec):
        """Builds, compiles and warms one row's model (all stay alive for the interleaved
        windows); its memory is the peak of exactly this, its first step the first call."""
        start = _allocator_bytes()
        _reset_peak()
        model, balancer = build(spec)
        step = Stepper(lambda model=model: model.train_on_batch(x, y, return_dict=True)["loss"])
        first_seconds = step.first(warmup)
        memory = _peak_since(start)
        if log is not None:
            log(f"  [{index + 1}/{len(specs)}] {presets.balancer_label(spec)} "
                f"({balancer.level}): first step {first_seconds:.1f} s")
        return {"spec": spec, "level": balancer.level, "step": step,
                "first_seconds": first_seconds, "memory": memory}

    # Every row builds its own model and training function: TensorFlow's "excessive retracing"
    # warning would fire for what is by design one trace per model.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        prepared = [prepare(i, spec) for i, spec in enumerate(specs)]
    finally:
        logger.setLevel(level)
    ew, others = prepared[0], prepared[1:]
    timing = interleaved(ew["step"], [p["step"] for p in others], steps, windows,
                         log=log)
    floor_ms = plain_ms = floor_ratio = None
    floor_timing = None
    if floor:
        steppers = {}
        for per_task in (False, True):
            model, _ = build("ew")
            bare = floor_step(model, jit_compile, per_task=per_task)
            steppers[per_task] = Stepper(lambda bare=bare: bare(x, y))
            steppers[per_task].first(warmup)
        floor_timing = interleaved(steppers[False], [steppers[True]], steps, windows)
        plain_ms = 1000 * floor_timing["baseline_seconds"]
        floor_ms = 1000 * floor_timing["rows"][0]["seconds"]
        floor_ratio = floor_timing["rows"][0]["ratio"]
        del steppers
    ew_seconds = timing["baseline_seconds"]
    baseline_memory = ew["memory"]
    rows = [BenchRow(balancer="ew", level=ew["level"], examples_per_second=batch_size / ew_seconds,
                     ratio_to_ew=1.0, step_ms=1000 * ew_seconds,
                     compile_seconds=ew["first_seconds"], peak_memory_mb=baseline_memory,
                     memory_ratio_to_ew=1.0 if baseline_memory else None)]
    for row, timed in zip(others, timing["rows"], strict=True):
        memory = row["memory"]
        rows.append(BenchRow(
            balancer=presets.balancer_label(row["spec"]), level=row["level"],
            examples_per_second=batch_size / timed["seconds"], ratio_to_ew=timed["ratio"],
            step_ms=1000 * timed["seconds"], compile_seconds=row["first_seconds"],
            peak_memory_mb=memory,
            memory_ratio_to_ew=memory / baseline_memory if memory and baseline_memory else None,
            ratio_span=timed["span"], noisy=timed["noisy"]))
    if floor_ratio is not None:
        for row in rows:
            if row.level == "parameters":
                row.ratio_to_floor = row.ratio_to_ew / floor_ratio
    del prepared, ew, others
    gc.collect()
    return {
        "config": {
            "architecture": architecture, "num_tasks": num_tasks, "batch_size": batch_size,
            "experts": experts, "expert_units": units, "jit_compile": jit_compile,
            "embedding_rows": embedding_rows, "optimizer": optimizer, "ranker": ranker,
            "steps_per_window": steps, "windows": windows, "warmup_steps": warmup,
        },
        # True when every model of the run kept `jit_compile` (Keras turns it off by itself when a
        # layer cannot compile): the string ranker's step compiles only with lookups moved out.
        "xla": all(compiled) if jit_compile else False,
        "lookup_examples_per_second": lookup_rate,
        "machine": _machine(),
        "floor_ms": floor_ms,
        "bare_plain_ms": plain_ms,
        "floor_ratio_to_ew": floor_ratio,
        "ew_ms_windows": [1000 * t for t in timing["baseline_windows"]],
        "ew_drift": timing["baseline_drift"],
        "floor_ratio_span": floor_timing["rows"][0]["span"] if floor_timing else None,
        "rows": [asdict(r) for r in rows],
    }


def run_grid(balancers: Sequence[str] | None = None, architectures: Sequence[str] = ("mmoe",),
             task_counts: Sequence[int] = (4,), jit_modes: Sequence[bool] = (True,),
             embedding_rows: int = 0, embedding_balancers: Sequence[str] = EMBEDDING_SPECS,
             ranker_rows: int = 0, log: Callable[[str], None] = print, **kwargs) -> dict:
    """`run` for every (architecture, K, XLA) combination, then, with `embedding_rows`, the
    large-embedding configuration (first architecture, K and XLA mode) on
    `embedding_balancers`; with `ranker_rows`, the ranker configuration (`ranker_features`, its
    item table that long) with string features on `embedding_balancers`, and its `ew` step against
    the same model fed integer ids (`strings_against_ids`), with SGD for the reason given at
    `EMBEDDING_SPECS`."""
    runs = []
    for architecture, num_tasks, jit_compile in itertools.product(architectures, task_counts,
                                                                  jit_modes):
        log(f"{architecture}, K = {num_tasks}, XLA {'on' if jit_compile else 'off'}:")
        runs.append(run(balancers, architecture=architecture, num_tasks=num_tasks,
                        jit_compile=jit_compile, log=log, **kwargs))
        log(_title(runs[-1]) + f": done ({len(runs[-1]['rows'])} rows)")
    if embedding_rows:
        runs.append(run(embedding_balancers, architecture=architectures[0],
                        num_tasks=task_counts[0], jit_compile=jit_modes[0],
                        embedding_rows=embedding_rows,
                        **{**kwargs, "floor": False, "optimizer": "sgd"}))
        log(_title(runs[-1]) + ": done")
    result = {"machine": _machine(), "runs": runs}
    if ranker_rows:
        log(f"ranker features (strings), {architectures[0]}, K = {task_counts[0]}:")
        runs.append(run(list(embedding_balancers), architecture=architectures[0],
                        num_tasks=task_counts[0], jit_compile=jit_modes[0],
                        embedding_rows=ranker_rows, ranker="strings", log=log,
                        **{**kwargs, "floor": False, "optimizer": "sgd"}))
        log(_title(runs[-1]) + ": done")
        log("ranker features: ew with strings against ew with integer ids, interleaved:")
        result["ranker_comparison"] = strings_against_ids(
            architectures[0], task_counts[0], jit_compile=jit_modes[0],
            embedding_rows=ranker_rows, **{k: v for k, v in kwargs.items()
                                              if k in ("batch_size", "experts", "units", "steps",
                                                       "windows", "warmup", "seed")})
        log(f"  strings / ids time per step: {result['ranker_comparison']['median']:.2f}")
    return result


def architectures_against(architectures: Sequence[str], baseline: str = "mmoe",
                          num_tasks: int = 4, balancer: str = "ew", batch_size: int = 2048,
                          experts: int = 8, units: int = 256, steps: int = 10, windows: int = 5,
                          warmup: int = 3, jit_compile: bool = True, seed: int = 0,
                          log: Callable[[str], None] | None = None) -> dict:
    """Each architecture's training step (`balancer`, same data, the same expert budget and
    widths through `presets`) against `baseline`'s, in interleaved window pairs (`interleaved`):
    what choosing an architecture costs, beside its parameters, first step and peak memory."""
    if baseline in architectures:
        architectures = [a for a in architectures if a != baseline]
    features, tasks, x, y = bench_data(num_tasks, batch_size, seed)
    prepared = []
    for i, name in enumerate([baseline, *architectures]):
        start = _allocator_bytes()
        _reset_peak()
        keras.utils.set_random_seed(seed)
        model = build_model(name, features, tasks, experts, units)
        model.compile(optimizer="adam", balancer=presets.make_balancer(balancer, num_tasks),
                      jit_compile=jit_compile)
        step = Stepper(lambda model=model: model.train_on_batch(x, y, return_dict=True)["loss"])
        first = step.first(warmup)
        prepared.append({"architecture": presets.TITLES.get(name, name), "step": step,
                         "parameters": model.count_params(), "first_seconds": first,
                         "memory": _peak_since(start), "xla": bool(model.jit_compile)})
        if log is not None:
            log(f"  [{i + 1}/{len(architectures) + 1}] {prepared[-1]['architecture']}: first step "
                f"{first:.1f} s")
    timing = interleaved(prepared[0]["step"], [p["step"] for p in prepared[1:]], steps, windows,
                         log=log)
    base_memory = prepared[0]["memory"]
    rows = []
    for entry, timed in zip(prepared, [None, *timing["rows"]], strict=True):
        seconds = timing["baseline_seconds"] if timed is None else timed["seconds"]
        rows.append({
            "architecture": entry["architecture"], "parameters": entry["parameters"],
            "examples_per_second": batch_size / seconds, "step_ms": 1000 * seconds,
            "ratio": 1.0 if timed is None else timed["ratio"],
            "ratio_span": None if timed is None else timed["span"],
            "noisy": False if timed is None else timed["noisy"],
            "first_step_seconds": entry["first_seconds"], "peak_memory_mb": entry["memory"],
            "memory_ratio": (entry["memory"] / base_memory if entry["memory"] and base_memory
                             else None),
            "xla": entry["xla"]})
    return {"config": {"baseline": presets.TITLES.get(baseline, baseline), "balancer": balancer,
                       "num_tasks": num_tasks, "batch_size": batch_size, "experts": experts,
                       "expert_units": units, "jit_compile": jit_compile,
                       "steps_per_window": steps, "windows": windows},
            "machine": _machine(), "baseline_drift": timing["baseline_drift"], "rows": rows}


def format_architectures(result: dict) -> str:
    """`architectures_against`'s table."""
    c, machine = result["config"], result["machine"]
    lines = [f"{machine['cpu_count']} CPU cores, TensorFlow {machine['tensorflow']}, Keras "
             f"{machine['keras']}; K = {c['num_tasks']}, batch {c['batch_size']}, expert budget "
             f"{c['experts']} × {c['expert_units']} (towers of 32), {c['balancer']}, XLA "
             f"{'on' if c['jit_compile'] else 'off'}; {c['windows']} window pairs of "
             f"{c['steps_per_window']} steps against {c['baseline']} (× {c['baseline']}: median "
             f"pair ratio of throughputs; ⚠: spread wider than the distance from 1); "
             f"{c['baseline']}'s windows drifted {100 * result['baseline_drift']:.0f} %.", "",
             f"| architecture | parameters | examples/s | × {c['baseline']} | spread | ms/step "
             "| first step s | peak MiB | memory × |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        span = r["ratio_span"]
        spread = (f"{span[0]:.2f}–{span[1]:.2f}" + (" ⚠" if r["noisy"] else "")) if span else ""
        lines.append(f"| {r['architecture']} | {r['parameters']:,} | "
                     f"{r['examples_per_second']:,.0f} | {r['ratio']:.2f} | {spread} | "
                     f"{r['step_ms']:.1f} | {r['first_step_seconds']:.1f} | "
                     f"{report.number(r['peak_memory_mb'], ',.1f')} | "
                     f"{report.number(r['memory_ratio'], '.2f')} |")
    return "\n".join(lines)


def strings_against_ids(architecture: str, num_tasks: int, batch_size: int = 2048,
                        experts: int = 8, units: int = 256, steps: int = 10, windows: int = 5,
                        warmup: int = 3, jit_compile: bool = True, seed: int = 0,
                        embedding_rows: int = 0) -> dict:
    """The ranker model's `ew` step with string user/country features (looked up in the input
    pipeline) against the same model fed integer ids, timed in alternating windows (ids, strings,
    ids, strings, …; at least 6 pairs) so that drift on a shared machine hits both alike. Returns
    the per-pair ratios of the strings model's throughput to the ids model's, their median, each
    model's ms/step, and whether both kept `jit_compile`."""
    models, batches = {}, {}
    for features in ("ids", "strings"):
        spec, tasks, x, y = bench_data(num_tasks, batch_size, seed, embedding_rows, features)
        if features == "strings":
            from keras_mtl.features.lookups import LookupStage

            x = LookupStage(spec)(x)  # what the pipeline hands the step
        keras.utils.set_random_seed(seed)
        model = build_model(architecture, spec, tasks, experts, units)
        model.compile(optimizer="sgd", balancer="ew", jit_compile=jit_compile)
        models[features], batches[features] = model, (x, y)
        for _ in range(1 + warmup):
            model.train_on_batch(x, y)

    def window(features):
        model, (x, y) = models[features], batches[features]
        start = time.perf_counter()
        for _ in range(steps):
            loss = model.train_on_batch(x, y, return_dict=True)["loss"]
        float(np.asarray(loss))
        return (time.perf_counter() - start) / steps

    timings = {"ids": [], "strings": []}
    for _ in range(max(windows, 6)):
        for features in ("ids", "strings"):
            timings[features].append(window(features))
    ratios = [i / s for i, s in zip(timings["ids"], timings["strings"], strict=True)]
    return {"ratios": ratios, "median": statistics.median(ratios),
            "ids_ms": [1000 * t for t in timings["ids"]],
            "strings_ms": [1000 * t for t in timings["strings"]],
            "xla": all(bool(m.jit_compile) for m in models.values()) if jit_compile else False}


def ranker_summary(result: dict) -> dict | None:
    """The ranker configuration's figures: whether the string model's step compiled with XLA, its
    ew throughput over the integer-id twin's (`strings_against_ids`), and the lookup stage's
    examples/s over the step's."""
    strings = next((r for r in result.get("runs", []) if r["config"].get("ranker")), None)
    comparison = result.get("ranker_comparison")
    if strings is None or comparison is None:
        return None
    ew = strings["rows"][0]["examples_per_second"]
    return {"xla": strings["xla"] and comparison["xla"],
            "ew_strings_over_ids": comparison["median"],
            "ratio_span": (min(comparison["ratios"]), max(comparison["ratios"])),
            "pairs": len(comparison["ratios"]),
            "lookup_examples_per_second": strings["lookup_examples_per_second"],
            "lookup_over_step": strings["lookup_examples_per_second"] / ew}


def _machine() -> dict:
    # The memory columns are empty without allocator statistics; the table's note says so.
    return {**report.machine(), "memory_statistics": _allocator_bytes() is not None}


def _title(result: dict) -> str:
    c = result["config"]
    title = (f"{c['architecture']} ({c['experts']} experts × {c['expert_units']}), "
             f"K = {c['num_tasks']}, batch {c['batch_size']}, XLA {'on' if c['jit_compile'] else 'off'}")
    if c.get("ranker"):
        title += (f", ranker features ({'string' if c['ranker'] == 'strings' else 'integer'} user "
                  f"and country; {c.get('embedding_rows') or RANKER_TABLE_ROWS:,}-row item table, "
                  f"history of {RANKER_HISTORY}), SGD")
    elif c.get("embedding_rows"):
        title += f", {c['embedding_rows']:,}-row embedding table"
    return title


def _span(values) -> str:
    values = sorted(v for v in values if v is not None)
    if not values:
        return ""
    return f"{values[0]:.2f}" if len(values) == 1 else f"{values[0]:.2f}–{values[-1]:.2f}"


def summary_rows(result: dict) -> list[dict]:
    """Per configuration: ew's throughput and the spans of `× ew` by level (every-k rows apart)."""
    out = []
    for run_ in result["runs"]:
        rows = run_["rows"]

        def ratios(level, every=False, rows=rows):
            return [r["ratio_to_ew"] for r in rows if r["level"] == level
                    and r["balancer"] != "ew" and ("(every" in r["balancer"]) == every]

        ew = {r["level"]: r for r in rows if r["balancer"] == "ew"}
        out.append({
            "config": _title(run_),
            "ew_examples_per_second": rows[0]["examples_per_second"],
            "ew_representation": ew.get("representation", {}).get("ratio_to_ew"),
            "ew_parameters": ew.get("parameters", {}).get("ratio_to_ew"),
            "floor": run_.get("floor_ratio_to_ew"),
            "losses": _span(ratios("losses")),
            "representation": _span(ratios("representation")),
            "parameters": _span(ratios("parameters")),
            "every_k": _span(ratios("parameters", every=True)),
            "parameters_to_floor": _span(r["ratio_to_floor"] for r in rows
                                         if r["ratio_to_floor"] is not None
                                         and "(every" not in r["balancer"]),
            "memory": _span(r["memory_ratio_to_ew"] for r in rows),
        })
    return out


def warnings(result: dict) -> list[str]:
    """What makes a run's ratios untrustworthy, in words: rows whose window pairs disagree by
    more than the effect they report, and an ew baseline that drifted during the run."""
    out = []
    for run_ in result["runs"] if "runs" in result else [result]:
        noisy = [f"{r['balancer']}@{r['level']}" for r in run_["rows"] if r.get("noisy")]
        if noisy:
            out.append(f"{_title(run_)}: {len(noisy)} of {len(run_['rows']) - 1} rows are within "
                       f"the noise of their window pairs (spread wider than their distance from "
                       f"ew; more --windows or a quieter machine): {', '.join(noisy)}.")
        drift = run_.get("ew_drift")
        if drift is not None and drift > DRIFT_WARNING:
            out.append(f"{_title(run_)}: ew's own windows varied by {100 * drift:.0f} % of their "
                       f"median (over {100 * DRIFT_WARNING:.0f} %): the machine was busy; read "
                       "each row's spread before its ratio.")
    return out


def format_markdown(result: dict) -> str:
    """One table per configuration; for several, a summary table first."""
    runs = result["runs"] if "runs" in result else [result]
    machine = result["machine"]
    lines = [f"{machine['cpu_count']} CPU cores, TensorFlow {machine['tensorflow']}, Keras "
             f"{machine['keras']}. × ew: throughput over ew's in the same configuration, the "
             "median over window pairs (each row's window timed next to an ew window, rows and "
             "ew alternating which goes first, every window after one untimed step); spread: "
             "the lowest–highest pair ratio, and ⚠ "
             "where it is wider than the row's distance from 1 (its ratio is noise, not a "
             "result); floor: one forward + K backward passes through the "
             "trunk + one update (parameter-level balancing's unavoidable cost), as a ratio of "
             "bare steps; × floor: a row's × ew over the floor's; memory: peak allocated over "
             "ew's; first step s: seconds of the first call (tracing, XLA compilation and one step)" + (
                 "" if machine.get("memory_statistics") else
                                        " (not measured: no allocator statistics)") + ".", ""]
    lines += [f"**Warning**: {w}" for w in warnings({"runs": runs})]
    if lines[-1] != "":
        lines.append("")
    if len(runs) > 1:
        lines += ["| configuration | ew examples/s | losses × ew | ew@repr. | representation "
                  "× ew | floor × ew | ew@param. | parameters × ew | × floor | every-k × ew "
                  "| memory × ew |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in summary_rows({"runs": runs}):
            lines.append(
                f"| {r['config']} | {r['ew_examples_per_second']:,.0f} | {r['losses']} | "
                f"{report.number(r['ew_representation'], '.2f')} | {r['representation']} | "
                f"{report.number(r['floor'], '.2f')} | "
                f"{report.number(r['ew_parameters'], '.2f')} | "
                f"{r['parameters']} | {r['parameters_to_floor']} | {r['every_k']} | "
                f"{r['memory']} |")
        lines.append("")
    ranker = ranker_summary(result)
    if ranker is not None:
        compiled = "compiled with XLA" if ranker["xla"] else "did NOT compile with XLA"
        low, high = ranker["ratio_span"]
        lines += [f"Ranker features: the string model's step {compiled}; "
                  f"its ew throughput is {ranker['ew_strings_over_ids']:.2f}× that of the same model "
                  f"fed integer ids (median of {ranker['pairs']} alternating window pairs, "
                  f"{low:.2f}–{high:.2f}); the input pipeline's lookups alone run at "
                  f"{ranker['lookup_examples_per_second']:,.0f} examples/s "
                  f"({ranker['lookup_over_step']:.1f}× the ew step's).", ""]
    for run_ in runs:
        c = run_["config"]
        floor = (f"; bare steps: plain {run_['bare_plain_ms']:.1f} ms, floor "
                 f"{run_['floor_ms']:.1f} ms ({run_['floor_ratio_to_ew']:.2f}× plain)"
                 if run_.get("floor_ms") else "")
        ew_windows = run_.get("ew_ms_windows")
        ew_note = (f"; ew's {len(ew_windows)} windows {min(ew_windows):.1f}–"
                   f"{max(ew_windows):.1f} ms (drift {100 * run_['ew_drift']:.0f} %)"
                   if ew_windows else "")
        lines += [f"**{_title(run_)}**: {c['windows']} window pairs of {c['steps_per_window']} "
                  f"steps per row{floor}{ew_note}", "",
                  "| balancer | level | examples/s | × ew | spread | ms/step | first step s "
                  "| × floor | peak MiB | memory × ew |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in run_["rows"]:
            span = r.get("ratio_span")
            spread = (f"{span[0]:.2f}–{span[1]:.2f}" + (" ⚠" if r.get("noisy") else "")
                      if span else "")
            lines.append(f"| {r['balancer']} | {r['level']} | {r['examples_per_second']:,.0f} | "
                         f"{r['ratio_to_ew']:.2f} | {spread} | {r['step_ms']:.1f} | "
                         f"{r['compile_seconds']:.1f} | "
                         f"{report.number(r.get('ratio_to_floor'), '.2f')} | "
                         f"{report.number(r.get('peak_memory_mb'), ',.1f')} | "
                         f"{report.number(r.get('memory_ratio_to_ew'), '.2f')} |")
        lines.append("")
    return "\n".join(lines)
