"""`keras-mtl` command line: train, benchmark and export multi-task ranking models."""

# Arguments and dispatch only: architectures are `keras_mtl.benchmarks.presets`, `bench` runs
# `keras_mtl.benchmarks.throughput`, `bench --quality` `keras_mtl.benchmarks.quality` (through
# `.parallel`); nothing under `keras_mtl.benchmarks` imports this module. TensorFlow, Keras and the
# benchmarks are imported inside the commands, not here, and `keras_mtl/__init__.py` imports them
# lazily, so that `--help` and `--version` need none of them.

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_mtl.benchmarks.presets import ARCHITECTURES as BACKBONES  # noqa: E402
from keras_mtl.benchmarks.presets import TASK_GRAPHS  # noqa: E402

DATASETS = ("synthetic", "census-income", "ali-ccp", "aliexpress", "kuairand")
# Data sets with no public download: `--data-path` names their files.
LOCAL_ONLY = {"ali-ccp": "load_ali_ccp", "aliexpress": "load_aliexpress",
              "kuairand": "load_kuairand"}
# `keras_mtl.balancers.available()`, listed here so that `train --help` needs no TensorFlow
# (tests/cli_test.py checks that the two agree).
BALANCERS = (
    "aligned_mtl", "cagrad", "cograd", "config", "db_mtl", "dtp", "dualproj", "dwa", "ema_loss",
    "ew", "excess_mtl", "fairgrad", "famo", "gls", "gradcraft", "graddrop", "gradnorm", "gradvac",
    "imtl_g", "imtl_l", "krum", "mean", "metabalance", "mgda", "mgda_ub", "moco", "multibalance",
    "nash_mtl", "pcgrad", "pe_ltr", "ple_schedule", "rlw", "sdmgrad", "slaw", "static", "stch",
    "trimmed_mean", "upgrad", "uw",
)


def parse_task(text: str):
    """`--task NAME[:KIND][:KEY=VALUE...]`, e.g. `click:pos_weight=4`, `watch_time:watch_time`,
    `rating:multiclass:num_classes=5`, `purchase:sample_space=click`,
    `purchase:esmm_parent=click` → a `Task` (any `Task` option as KEY=VALUE)."""
    from keras_mtl.tasks import Task

    name, *parts = text.split(":")
    options: dict = {}
    for part in parts:
        if "=" not in part:
            options["kind"] = part
            continue
        key, value = part.split("=", 1)
        for parse in (int, float, str):  # num_classes=5 is an int, pos_weight=5 works as one too
            try:
                options[key] = parse(value)
                break
            except ValueError:
                continue
    try:
        return Task(name, **options)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"--task {text!r}: {error}") from None


class FileData:
    """`keras-mtl train --data ...`: the user's files as the train/validation/test splits the
    command trains on, with the spec read from `--spec` or inferred from a sample of the train
    files (tasks left out), and the tasks from `--task`."""

    def __init__(self, args: argparse.Namespace):
        from keras_mtl.data import list_files, read_sample
        from keras_mtl.features import FeatureSpec

        if not args.task:
            raise SystemExit("--data needs at least one --task (the label columns to train).")
        self.tasks = [parse_task(t) for t in args.task]
        self.paths = {"train": args.data, "validation": args.validation_data,
                      "test": args.test_data or args.validation_data}
        self.rows = {split: len(list_files(p)) if p else 0 for split, p in self.paths.items()}
        if args.spec:
            with open(args.spec) as handle:
                self.features = FeatureSpec.from_config(json.load(handle))
        else:
            sample = read_sample(args.data, max_rows=args.sample_rows, seed=args.seed)
            self.features = FeatureSpec.infer(sample, tasks=self.tasks)
            print(self.features.inference_report)
        self.description = (f"files {args.data} ({self.rows['train']} file(s)); spec "
                            f"{'from ' + args.spec if args.spec else 'inferred from a sample'}")
        self.batch_seed = args.seed

    def as_tf_dataset(self, split: str, batch_size: int, seed: int | None = None):
        from keras_mtl.data import from_files

        if not self.paths[split]:
            return None
        return from_files(self.paths[split], self.features, self.tasks, batch_size=batch_size,
                          shuffle=split == "train", seed=seed)


def load_dataset(args: argparse.Namespace):
    from keras_mtl import datasets

    if args.data:
        return FileData(args)
    if args.dataset == "synthetic":
        return datasets.make_synthetic(num_examples=args.num_examples,
                                       correlation=args.correlation, seed=args.seed)
    if args.dataset in LOCAL_ONLY:
        if not args.data_path:
            raise SystemExit(f"--dataset {args.dataset} needs --data-path: its files are not "
                             "publicly downloadable (see datasets."
                             f"{LOCAL_ONLY[args.dataset]}).")
        options = {"path": args.data_path, "seed": args.seed, "max_rows": args.max_rows}
        if args.dataset == "kuairand":
            if args.task:
                options["tasks"] = args.task
            return datasets.load_kuairand(**options)
        if args.task:
            raise SystemExit(f"--task picks tasks of --data or --dataset kuairand; {args.dataset} "
                             "has its two (use --conversion for how the second is trained).")
        options["conversion"] = args.conversion
        if args.dataset == "aliexpress":
            return datasets.load_aliexpress(country=args.country, **options)
        return datasets.load_ali_ccp(**options)
    data = datasets.load_census_income(path=args.data_path, seed=args.seed)
    return data.head(args.max_rows, seed=args.seed) if args.max_rows else data


def format_table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns),
             "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(_cell(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def per_task_rows(results: dict, task_names: list[str]) -> tuple[list[dict], list[str]]:
    rows, columns = [], ["task"]
    for name in task_names:
        row = {"task": name}
        for key, value in results.items():
            if key.startswith(f"{name}_"):
                metric = key[len(name) + 1:]
                if any(key.startswith(f"{other}_") and len(other) > len(name)
                       for other in task_names):
                    continue
                row[metric] = float(value)
                if metric not in columns:
                    columns.append(metric)
        rows.append(row)
    return rows, columns


def train(args: argparse.Namespace) -> dict:
    import keras

    import keras_mtl as km
    from keras_mtl.benchmarks import presets

    keras.utils.set_random_seed(args.seed)
    data = load_dataset(args)
    print(f"Data: {data.description}")
    if isinstance(data, FileData):
        print(f"      tasks: {[t.name for t in data.tasks]}")
    else:
        print(f"      {len(data.train)} train / {len(data.validation)} validation / "
              f"{len(data.test)} test rows; tasks: {[t.name for t in data.tasks]}")
    expert_units = [int(u) for u in args.expert_units.split(",")]
    task_graph = None
    if args.task_graph:
        task_graph = presets.make_task_graph(args.task_graph, [t.name for t in data.tasks])
    model = presets.build_model(args.model, data.features, data.tasks, expert_units=expert_units,
                                num_experts=args.num_experts,
                                tower_units=[int(u) for u in args.tower_units.split(",")],
                                task_graph=task_graph)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  jit_compile=args.jit_compile)
    balancer = km.balancers.get(args.balancer, **_balancer_args(args.balancer_args))
    graph = f" + {_graph_text(args.task_graph, data.tasks)}" if args.task_graph else ""
    print(f"Model: {args.model}{graph} ({model.count_params():,} parameters), balancer: "
          f"{balancer.name_in_registry} at the {balancer.level} level")
    train_ds = data.as_tf_dataset("train", batch_size=args.batch_size, seed=args.seed)
    val_ds = data.as_tf_dataset("validation", batch_size=4096)
    start = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=args.epochs, balancer=balancer,
              verbose=args.verbose)
    seconds = time.perf_counter() - start
    test_ds = data.as_tf_dataset("test", batch_size=4096)
    results = {}
    if test_ds is not None:
        results = model.evaluate(test_ds, return_dict=True, verbose=0)
        rows, columns = per_task_rows(results, [t.name for t in data.tasks])
        held_out = ("--test-data" if getattr(args, "test_data", None) else "--validation-data"
                    ) if isinstance(data, FileData) else f"Test split ({len(data.test)} rows)"
        print(f"\n{held_out}, after {args.epochs} epochs in {seconds:.0f}s:")
        print(format_table(rows, columns))
    if args.save:
        model.save(args.save)
        print(f"\nSaved to {args.save}")
    return results


def _graph_text(name: str, tasks) -> str:
    names = [t.name for t in tasks]
    if name == "aitm":
        return "AITM " + " → ".join(names)
    return "DBMTL " + ", ".join(f"{child} ← {'+'.join(names[:k])}"
                                for k, child in enumerate(names) if k)


def bench(args: argparse.Namespace) -> dict:
    if args.quality:
        return quality(args)
    if args.streaming:
        return streaming(args)
    if args.first_step:
        return first_step(args)
    from keras_mtl.benchmarks import report

    # Peak-memory figures need allocator statistics, which TensorFlow keeps on CPU only with its
    # BFC allocator: the flag is set before the benchmark allocates anything.
    with report.cpu_allocator_statistics():
        return _throughput(args)


def _throughput(args: argparse.Namespace) -> dict:
    from keras_mtl.benchmarks import report, throughput

    settings = throughput.settings(batch_size=args.batch_size, experts=args.num_experts,
                                   units=args.expert_units, steps=args.steps,
                                   windows=args.windows, quick=args.quick)
    architectures = _choices(args.model or "mmoe", BACKBONES, "--model")
    task_counts = [int(k) for k in args.tasks.split(",")]
    try:
        jit_modes = [_jit_flag(v) for v in (args.jit_compile or "true").split(",")]
    except argparse.ArgumentTypeError as error:
        raise SystemExit(str(error)) from None
    if "auto" in jit_modes:
        raise SystemExit("--jit-compile: give true, false or true,false for bench.")
    if args.compare_architectures:
        names = _choices(args.compare_architectures, BACKBONES, "--compare-architectures")
        result = throughput.architectures_against(
            names, baseline=architectures[0], num_tasks=task_counts[0],
            balancer=(args.balancers or "ew").split(",")[0], jit_compile=jit_modes[0],
            log=lambda line: print(line, flush=True), **settings)
        return _printed_and_saved(throughput.format_architectures(result), result, args)
    balancers = (args.balancers.split(",") if args.balancers
                 else list(throughput.QUICK_BALANCERS) if args.quick else None)
    result = throughput.run_grid(balancers, architectures=architectures, task_counts=task_counts,
                                 jit_modes=jit_modes, embedding_rows=args.embedding_rows,
                                 ranker_rows=args.ranker,
                                 log=lambda line: print(line, flush=True), **settings)
    table = throughput.format_markdown(result)
    print(table)
    for warning in throughput.warnings(result):
        print(f"WARNING: {warning}")
    if args.markdown:
        report.save_text(table, args.markdown)
        print(f"\nWrote {args.markdown}")
    if args.json:
        report.save_json(result, args.json)
        print(f"\nWrote {args.json}")
    return result


def _choices(value: str, allowed, flag: str) -> list[str]:
    names = value.split(",")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise SystemExit(f"{flag}: unknown {unknown}; expected some of {list(allowed)}.")
    return names


def streaming(args: argparse.Namespace) -> dict:
    from keras_mtl.benchmarks import streaming as streaming_lib

    rows = [int(float(r)) for r in args.streaming.split(",")]
    result = streaming_lib.run(rows, batch_size=args.batch_size,
                               log=lambda line: print(line, flush=True))
    return _printed_and_saved(streaming_lib.format_markdown(result), result, args, lead="\n")


def first_step(args: argparse.Namespace) -> dict:
    from keras_mtl.benchmarks import first_step as first_step_lib

    balancers = (args.balancers.split(",") if args.balancers
                 else list(first_step_lib.DEFAULT_BALANCERS))
    try:
        jit = _jit_flag(args.jit_compile or "auto")
    except argparse.ArgumentTypeError as error:
        raise SystemExit(str(error)) from None
    bench_model = {}
    if args.model:  # the throughput benchmark's model instead of the quickstart's
        bench_model = dict(architecture=args.model.split(",")[0],
                           num_tasks=int(args.tasks.split(",")[0]), batch_size=args.batch_size,
                           experts=args.num_experts, units=args.expert_units)
    result = first_step_lib.run(balancers, census_path=args.data_path,
                                jit_compile=None if jit == "auto" else jit,
                                log=lambda line: print(line, flush=True), **bench_model)
    return _printed_and_saved(first_step_lib.format_markdown(result), result, args, lead="\n")


def _printed_and_saved(table: str, result: dict, args: argparse.Namespace, lead: str = "") -> dict:
    """A benchmark's table printed, and written to `--markdown` / `--json` where given."""
    from keras_mtl.benchmarks import report

    print(lead + table)
    if args.markdown:
        report.save_text(table, args.markdown)
    if args.json:
        report.save_json(result, args.json)
    return result


def quality(args: argparse.Namespace) -> dict:
    from keras_mtl.benchmarks import parallel, report
    from keras_mtl.benchmarks import quality as quality_lib

    if args.data:
        result = _quality_on_files(args)
    else:
        if args.task or args.validation_data or args.test_data or args.spec:
            raise SystemExit("--task, --validation-data, --test-data and --spec go with --data "
                             "(the benchmark on your files).")
        if args.experiments:
            experiments = args.experiments.split(",")
        else:  # MovieLens joins the default set with its files (these machines can't download)
            experiments = [*quality_lib.DEFAULT_EXPERIMENTS,
                           *(["movielens"] if args.movielens_path else [])]
        balancers = args.balancers.split(",") if args.balancers else None
        result = parallel.run(experiments, jobs=args.jobs, quick=args.quick, seeds=args.seeds,
                              census_path=args.data_path, balancers=balancers,
                              movielens_path=args.movielens_path,
                              log=lambda line: print(line, flush=True))
    if args.update:
        if not args.json:
            raise SystemExit("--update needs --json: the result file to update.")
        if os.path.exists(args.json):
            with open(args.json) as handle:
                result = quality_lib.merge(json.load(handle), result)
    table = quality_lib.format_markdown(result)
    print("\n" + table)
    if args.markdown:
        report.save_text(table, args.markdown)
        print(f"\nWrote {args.markdown}")
    if args.json:
        report.save_json(result, args.json)
        print(f"Wrote {args.json}")
    return result


def _quality_on_files(args: argparse.Namespace) -> dict:
    """`bench --quality --data FILES`: `quality.files` on the user's streamed files, in this
    process."""
    import dataclasses

    from keras_mtl.benchmarks import quality as quality_lib
    from keras_mtl.benchmarks import report

    if args.experiments or args.movielens_path:
        raise SystemExit("--data benchmarks your files: leave out --experiments and "
                         "--movielens-path.")
    if not args.validation_data:
        raise SystemExit("--quality --data needs --validation-data: the learning rate is "
                         "picked on it (and, without --test-data, the test metrics are its).")
    budget = quality_lib.QUICK_BUDGETS["files"] if args.quick else quality_lib.DEFAULT_BUDGETS[
        "files"]
    changes = {"seeds": args.seeds, "epochs": args.epochs, "batch_size": args.batch_size,
               "learning_rates": args.learning_rates and tuple(
                   float(r) for r in args.learning_rates.split(","))}
    budget = dataclasses.replace(budget, **{k: v for k, v in changes.items() if v is not None})
    if budget.seeds < 1 or budget.epochs < 1:
        raise SystemExit("--seeds and --epochs must be at least 1.")
    models = _choices(args.model, BACKBONES, "--models") if args.model else list(
        quality_lib.FILES_MODELS)
    balancers = ([b for b in args.balancers.split(",") if b] if args.balancers is not None
                 else list(quality_lib.FILES_BALANCERS))
    data = FileData(args)
    if not args.test_data:
        data.description += ("; no --test-data: the test metrics are the validation files', "
                             "on which the learning rate was also picked")
    start = time.perf_counter()
    files = quality_lib.files(data, budget, models=models, balancers=balancers,
                              log=lambda line: print(line, flush=True))
    files["seconds"] = time.perf_counter() - start
    return {"quick": args.quick, "machine": report.machine(), "files": files,
            "seconds": files["seconds"]}


def export(args: argparse.Namespace) -> str:
    import keras_mtl  # registers the classes the .keras file names
    from keras_mtl import serving

    # keras_mtl.load_model: a truncated/empty file says so instead of Keras' "File not found".
    model = keras_mtl.load_model(args.model_path)
    exponents = {}
    for item in args.exponent or []:
        task, _, value = item.partition("=")
        if not value:
            raise ValueError(f"--exponent takes TASK=VALUE, got {item!r}.")
        exponents[task] = float(value)
    transforms = []
    for item in args.transform or []:
        parts = item.split(":")
        kwargs = {"feature": parts[0], "kind": parts[1] if len(parts) > 1 else "identity"}
        for param in parts[2:]:
            key, _, value = param.partition("=")
            kwargs[key] = float(value)
        transforms.append(serving.FeatureTransform(**kwargs))
    score = serving.ScoreSpec(exponents=exponents, transforms=transforms)
    path = serving.export(model, args.output, score=score, version=args.version)
    print(f"Exported {args.model_path} to {path}")
    print(f"  signatures: {serving.DEFAULT_SIGNATURE}, {serving.EXPONENTS_SIGNATURE}")
    contract = serving.read_contract(path)
    print(f"  inputs: {contract['inputs']}")
    print(f"  outputs: {contract['tasks'] + ['score']}; score exponents {contract['exponents']}")
    if args.example_request:
        rows = serving.example_rows(model, num_rows=2, score=score)
        with open(args.example_request, "w") as handle:
            json.dump(serving.ServingClient.from_export(path).rest_body(rows), handle, indent=1)
        print(f"  example REST body: {args.example_request}")
    return path


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends each option's default to its help, except where there is none (None, False) or
    the help already names it."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        default = action.default
        if (default in (None, False, argparse.SUPPRESS) or "default" in help_text.lower()
                or not action.option_strings):
            return help_text
        return f"{help_text} (default: %(default)s)" if help_text else "default: %(default)s"


def version_text() -> str:
    """`keras-mtl --version`: this package's version and the TensorFlow/Keras it would use
    (read from the installed distributions, without importing them)."""
    from importlib import metadata

    from keras_mtl import __version__

    found = []
    for name in ("tensorflow", "keras"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return f"keras-mtl {__version__} ({', '.join(found)}; Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras-mtl", description=__doc__,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "train", help="Train a multi-task model and print per-task metrics.",
        formatter_class=_HelpFormatter,
        description="Train a multi-task model and print per-task metrics.\n\nBalancers:"
                    + _wrapped(", ".join(BALANCERS), indent="  ")
                    + "\n(hyper-parameters: --balancer-args; see keras_mtl.balancers.get).")
    p.add_argument("--dataset", choices=DATASETS, default="synthetic",
                   help="A bundled dataset (ignored with --data).")
    p.add_argument("--data-path", default=None,
                   help="Local data file/folder of --dataset: census-income (default: download), "
                        "ali-ccp, aliexpress, kuairand (required: no public download).")
    p.add_argument("--max-rows", type=int, default=None,
                   help="With --dataset: read at most this many rows per file (census-income: "
                        "sample this many training rows), for quick runs.")
    p.add_argument("--country", default="NL", choices=("NL", "ES", "FR", "US"),
                   help="--dataset aliexpress: the country's files (AliExpress_<country>/).")
    p.add_argument("--conversion", default="click", choices=("click", "esmm", "impressions"),
                   help="--dataset ali-ccp / aliexpress: train the conversion task on clicked "
                        "rows (sample space), ESMM-style over impressions, or over impressions.")
    _add_file_arguments(p, bench=False)
    p.add_argument("--model", choices=BACKBONES, default="ple", help="The architecture.")
    p.add_argument("--task-graph", choices=TASK_GRAPHS, default=None,
                   help="Structure among the task heads, over any --model, in the tasks' order "
                        "(--task order with --data): aitm, AITM's transfer along the tasks as "
                        "conversion steps (click → purchase → ...; binary tasks with end-to-end "
                        "labels, purchase 0 where there was no click, no sample_space or "
                        "esmm_parent); dbmtl, DBMTL where each task also reads the relation "
                        "outputs of every task before it.")
    p.add_argument("--balancer", default="ew", metavar="NAME",
                   help="A balancer name: one of those listed above, or an alias (sum, constant, "
                        "random).")
    p.add_argument("--balancer-args", default=None,
                   help='Hyper-parameters as JSON, e.g. \'{"relax_factor": 0.5}\'.')
    p.add_argument("--epochs", type=int, default=10, help="Passes over the train split.")
    p.add_argument("--batch-size", type=int, default=256, help="Training batch size.")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's learning rate.")
    p.add_argument("--num-experts", type=int, default=4,
                   help="Expert budget: MMoE/OMoE experts; PLE/CGC (and HoME, per level) get "
                   "half as shared experts.")
    p.add_argument("--expert-units", default="64", help="Comma-separated widths of each expert.")
    p.add_argument("--tower-units", default="32", help="Comma-separated widths of each tower.")
    p.add_argument("--num-examples", type=int, default=20000, help="Synthetic data size.")
    p.add_argument("--correlation", type=float, default=0.5, help="Synthetic task correlation p.")
    p.add_argument("--seed", type=int, default=0, help="Seeds data splits and weights.")
    p.add_argument("--jit-compile", default="auto", type=_jit_flag,
                   help="auto (Keras' choice), true or false.")
    p.add_argument("--save", default=None, help="Write the trained model to this .keras file.")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="0 silent, 1 progress bar, 2 one line per epoch; 1 and 2 also print a "
                        "per-task table (train and validation side by side) after each epoch.")

    b = commands.add_parser(
        "bench", help="Training throughput of each balancer relative to ew, in the same run.",
        formatter_class=_HelpFormatter)
    b.add_argument("--balancers", default=None,
                   help="Comma-separated names, each optionally name@level and/or name*k "
                        "(weights recomputed every k steps); default: every registered balancer "
                        "at its default level plus a few other levels and every-k variants. "
                        "With --quality: the Census rows on PLE (default: all) and the funnel's "
                        "(default: 14 of them); with --quality --data: the rows on the first "
                        "--models architecture (default: uw,famo,mgda,pcgrad).")
    b.add_argument("--model", "--models", default=None,
                   help=f"Comma-separated architectures among {','.join(BACKBONES)}; one table "
                        "per architecture × tasks × XLA mode (default: mmoe). With --quality "
                        "--data: the rows trained with ew, the balancers on the first "
                        "(default: ple,mmoe,shared-bottom).")
    b.add_argument("--tasks", default="4", help="Comma-separated task counts, e.g. 2,4,8.")
    b.add_argument("--batch-size", type=int, default=2048)
    b.add_argument("--num-experts", type=int, default=8)
    b.add_argument("--expert-units", type=int, default=256)
    b.add_argument("--steps", type=int, default=10, help="Steps per timed window.")
    b.add_argument("--windows", type=int, default=5,
                   help="Timed window pairs per row (each next to an ew window; the median "
                        "ratio is kept, the spread shown).")
    b.add_argument("--jit-compile", default=None,
                   help="true, false, or true,false for both (default true; with --first-step "
                        "auto, as compile() leaves it: no XLA on a CPU-only machine).")
    b.add_argument("--compare-architectures", default=None, metavar="NAMES",
                   help="Instead of balancers: these architectures' training steps (the first "
                        "--balancers entry, default ew) against --model's, in window pairs, with "
                        "parameters, first step and memory.")
    b.add_argument("--first-step", action="store_true",
                   help="Instead of throughput: seconds from fit() to the end of the first step "
                        "of the README quickstart's model, each balancer in a fresh process "
                        "(on Census-Income with --data-path, else on the synthetic data); with "
                        "--model, of the throughput benchmark's model instead (its first "
                        "architecture and --tasks count, e.g. --model mmoe --tasks 32 "
                        "--jit-compile true).")
    b.add_argument("--embedding-rows", type=int, default=0,
                   help="Also measure a model with an id feature embedded in a table of this "
                        "many rows (e.g. 10000000) at the representation level.")
    b.add_argument("--ranker", type=int, nargs="?", const=1_000_000, default=0, metavar="ROWS",
                   help="Also measure the own-ranker features: a 50-id history attended against "
                        "the candidate in a shared ROWS-row table (default 1000000), tags, a "
                        "vector, and string user/country features looked up in the input "
                        "pipeline, against the same model fed integer ids.")
    b.add_argument("--streaming", default=None, metavar="ROWS[,ROWS]",
                   help="Instead of throughput: stream Parquet shards of these many rows (e.g. "
                        "1000000,10000000) through from_files; pipeline examples/s against the ew "
                        "step's, and peak memory per row count.")
    b.add_argument("--quick", action="store_true",
                   help="A small model, 5 balancers (unless --balancers), 3 short window pairs "
                        "per row: about a minute on 2 quiet cores.")
    b.add_argument("--json", default=None, help="Also write the result as JSON here.")
    b.add_argument("--quality", action="store_true",
                   help="Instead of throughput: test AUC/MSE of architectures and balancers on "
                        "Census-Income, the synthetic correlation sweep and the funnel, over "
                        "seeds (about 35 minutes on 2 cores; --quick: a few minutes); with "
                        "--data, on your own files.")
    b.add_argument("--experiments", default=None,
                   help="--quality: comma-separated subset of census,synthetic,funnel,movielens,"
                        "watch-time,architectures (default: the first three, and movielens with "
                        "--movielens-path). architectures: every train --model architecture with ew "
                        "on Census-Income and the synthetic data at p = 0.5, with parameter counts "
                        "(about 35 minutes on 2 cores).")
    b.add_argument("--seeds", type=int, default=None, help="--quality: seeds per row (default 5).")
    b.add_argument("--update", action="store_true",
                   help="--quality with --json: merge into that file, replacing the experiments "
                        "run now and keeping its others, and write --markdown from the merged "
                        "result (e.g. rerun the funnel alone into docs/quality.json).")
    b.add_argument("--jobs", type=int, default=2,
                   help="--quality: processes running experiments side by side (default 2: on "
                        "2 cores the small synthetic and funnel models leave a core idle).")
    b.add_argument("--data-path", default=None,
                   help="--quality, --first-step: a local census-income file or folder "
                        "(--quality's default: download).")
    b.add_argument("--movielens-path", default=None,
                   help="--quality: GroupLens' MovieLens 100K files (folder or ml-100k.zip) for "
                        "the history experiment: AUC with and without the user's history.")
    b.add_argument("--markdown", default=None, help="Also write the tables here.")
    _add_file_arguments(b, bench=True)
    b.add_argument("--epochs", type=int, default=None,
                   help="--quality --data: passes over the train files per run (default 2; "
                        "--quick 1).")
    b.add_argument("--learning-rates", default=None, metavar="LR[,LR]",
                   help="--quality --data: the grid each architecture's ew row picks its "
                        "learning rate from on the first seed (default 0.003,0.01; --quick "
                        "0.003).")
    b.add_argument("--seed", type=int, default=0,
                   help="--quality --data: the seed of the sample the spec is inferred from.")

    e = commands.add_parser(
        "export", help="Write a trained .keras model as a versioned SavedModel for TF Serving.",
        formatter_class=_HelpFormatter)
    e.add_argument("model_path", help="A .keras file saved by keras-mtl train --save or model.save.")
    e.add_argument("output", help="The model base path, e.g. saved_models/census.")
    e.add_argument("--version", type=int, default=None, help="Default: the next free integer.")
    e.add_argument("--exponent", action="append", metavar="TASK=W",
                   help="Score exponent of a task (repeatable). Default 1 (binary), 0 (regression).")
    e.add_argument("--transform", action="append", metavar="FEATURE:KIND[:k=v]",
                   help="A score factor, e.g. video_length:log1p or price:clip:low=0:high=50.")
    e.add_argument("--example-request", default=None,
                   help="Also write a REST body with placeholder rows here (for curl).")
    return parser


def _add_file_arguments(parser: argparse.ArgumentParser, bench: bool) -> None:
    """`--data` and its companions, the same for `train` and `bench --quality`."""
    instead = "--quality on your own" if bench else "Train on your own"
    parser.add_argument(
        "--data", default=None, metavar="FILES",
        help=f"{instead} Parquet/CSV/TFRecord files instead of "
             f"{'the bundled experiments' if bench else '--dataset'}: a path, glob "
             "('logs/*.parquet') or folder, streamed (keras_mtl.data.from_files). Needs --task"
             f"{' and --validation-data' if bench else ''}; the spec is --spec or inferred.")
    parser.add_argument(
        "--task", action="append", metavar="NAME[:KIND][:KEY=VALUE]",
        help="With --data" + ("" if bench else " (or --dataset kuairand: is_click, long_view, "
                              "is_like, watch_time, ...)")
             + ", a label column to train (repeatable): click, watch_time:regression, "
               "purchase:sample_space=click, purchase:esmm_parent=click, ctr:weight=0.5.")
    parser.add_argument(
        "--validation-data", default=None, metavar="FILES",
        help="With --data: validation files ("
             + ("the learning-rate pick; the test metrics too unless --test-data)." if bench else
                "evaluated each epoch, and at the end unless --test-data)."))
    parser.add_argument("--test-data", default=None, metavar="FILES",
                        help="With --data: test files.")
    parser.add_argument("--spec", default=None, metavar="SPEC.json",
                        help="With --data: a FeatureSpec config (FeatureSpec.get_config() as "
                             "JSON); default: inferred from a sample of the train files.")
    parser.add_argument("--sample-rows", type=int, default=200_000,
                        help="With --data and no --spec: rows sampled (one pass) to infer the "
                             "spec.")


def _balancer_args(text: str | None) -> dict:
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--balancer-args must be a JSON object: {error}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"--balancer-args must be a JSON object, got {text!r}.")
    return parsed


def _jit_flag(value: str) -> bool | str:
    lowered = value.lower()
    if lowered in ("auto",):
        return "auto"
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"--jit-compile takes auto, true or false; got {value!r}.")


def _wrapped(text: str, indent: str = "", width: int = 88) -> str:
    import textwrap

    return "\n" + textwrap.fill(text, width=width, initial_indent=indent,
                                 subsequent_indent=indent)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from keras_mtl._startup import import_tensorflow

    import_tensorflow()  # every command needs it; without TF's C++ start-up lines
    command = {"train": train, "bench": bench, "export": export}[args.command]
    try:
        command(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as error:
        print(f"keras-mtl {args.command}: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        from keras_mtl.datasets import DownloadError

        if not isinstance(error, DownloadError):
            raise
        print(f"keras-mtl {args.command}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
