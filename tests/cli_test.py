import json
import os

import numpy as np
import pytest

from keras_mtl.cli import main
from tests.helpers import CENSUS_FILE


def parse_table(output: str) -> dict:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("task"))
    header = lines[start].split()
    rows = {}
    for line in lines[start + 2:]:
        cells = line.split()
        if len(cells) != len(header):
            break
        rows[cells[0]] = dict(zip(header[1:], map(float, cells[1:]), strict=True))
    return rows


@pytest.mark.parametrize("model", ["ple", "mmoe", "cgc", "shared-bottom", "home"])
def test_train_on_synthetic_prints_a_per_task_table(model, capsys, tmp_path):
    save = os.path.join(tmp_path, "m.keras")
    code = main(["train", "--model", model, "--epochs", "1", "--num-examples", "1000",
                 "--verbose", "0", "--save", save])
    assert code == 0
    table = parse_table(capsys.readouterr().out)
    assert set(table) == {"y1", "y2"}
    assert set(table["y1"]) == {"loss", "rmse"}
    assert os.path.exists(save)


def test_bad_arguments_exit_with_a_message(capsys):
    assert main(["train", "--balancer", "nope", "--num-examples", "100", "--epochs", "1",
                 "--verbose", "0"]) == 2
    assert "Unknown balancer 'nope'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CENSUS_FILE), reason="shared census data not present")
def test_mmoe_reaches_the_papers_census_auc(capsys):
    """MMoE paper: income 0.9359 / never-married 0.9927 (full UCI train set). Ours: 80 % of the
    UCI test file, seeded split, 5 epochs."""
    code = main(["train", "--dataset", "census-income", "--data-path", CENSUS_FILE,
                 "--model", "mmoe", "--epochs", "5", "--verbose", "0"])
    assert code == 0
    table = parse_table(capsys.readouterr().out)
    assert table["income"]["auc"] >= 0.93
    assert table["never_married"]["auc"] >= 0.98


@pytest.mark.parametrize("balancer, args", [
    ("multibalance", None), ("metabalance", '{"relax_factor": 0.5}'), ("gradcraft", None),
    ("cograd", '{"gamma": 0.01}'),
])
def test_train_with_the_recommender_balancers(balancer, args, capsys):
    argv = ["train", "--model", "mmoe", "--balancer", balancer, "--epochs", "1",
            "--num-examples", "600", "--verbose", "0"]
    if args:
        argv += ["--balancer-args", args]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"balancer: {balancer}" in out
    assert all(np.isfinite(row["loss"]) for row in parse_table(out).values())


def test_bench_quick_writes_ratios_against_ew(tmp_path, capsys):
    path = os.path.join(tmp_path, "bench.json")
    allocator_flag = os.environ.get("TF_CPU_ALLOCATOR_USE_BFC")
    assert main(["bench", "--quick", "--jit-compile", "false", "--balancers",
                 "multibalance,ew@parameters,mgda@parameters*3",
                 "--json", path, "--markdown", os.path.join(tmp_path, "bench.md")]) == 0
    with open(path) as handle:
        result = json.load(handle)
    for run in result["runs"]:
        rows = {(r["balancer"], r["level"]): r for r in run["rows"]}
        assert set(rows) == {("ew", "losses"), ("multibalance", "representation"),
                             ("ew", "parameters"), ("mgda (every 3)", "parameters")}
        assert rows[("ew", "losses")]["ratio_to_ew"] == 1.0
        assert all(r["examples_per_second"] > 0 for r in rows.values())
        # × floor is only defined for parameter-level rows, as × ew over the floor's ratio.
        assert rows[("multibalance", "representation")]["ratio_to_floor"] is None
        floor = run["floor_ratio_to_ew"]
        assert floor > 0 and run["floor_ms"] > 0 and run["bare_plain_ms"] > 0
        assert rows[("ew", "parameters")]["ratio_to_floor"] == pytest.approx(
            rows[("ew", "parameters")]["ratio_to_ew"] / floor)
    assert "| multibalance | representation |" in capsys.readouterr().out
    with open(os.path.join(tmp_path, "bench.md")) as handle:
        assert "| mgda (every 3) | parameters |" in handle.read()
    # The allocator flag set for memory statistics does not leak into later subprocesses.
    assert os.environ.get("TF_CPU_ALLOCATOR_USE_BFC") == allocator_flag


def test_bench_rejects_unknown_architecture():
    with pytest.raises(SystemExit, match=r"--model: unknown \['mmeo'\]"):
        main(["bench", "--quick", "--model", "mmeo"])


def test_export_writes_a_versioned_saved_model_and_an_example_request(tmp_path, capsys):
    import tensorflow as tf

    save = os.path.join(tmp_path, "m.keras")
    assert main(["train", "--model", "cgc", "--epochs", "1", "--num-examples", "400",
                 "--verbose", "0", "--save", save]) == 0
    base = os.path.join(tmp_path, "synthetic")
    request = os.path.join(tmp_path, "request.json")
    assert main(["export", save, base, "--exponent", "y1=1", "--transform", "x3:clip:low=0",
                 "--example-request", request]) == 0
    assert os.path.isdir(os.path.join(base, "1", "variables"))
    with open(request) as handle:
        body = json.load(handle)
    signature = tf.saved_model.load(os.path.join(base, "1")).signatures["serving_default"]
    columns = {k: tf.constant([row[k] for row in body["instances"]], tf.float32)
               for k in body["instances"][0]}
    outputs = signature(**columns)
    assert set(outputs) == {"y1", "y2", "score"}
    # Regression task y1 with exponent 1: score = max(y1, floor) * clip(x3, 0).
    np.testing.assert_allclose(
        outputs["score"], np.maximum(outputs["y1"], 1e-7) * np.maximum(columns["x3"], 0), rtol=1e-6)
    assert main(["export", save, base, "--version", "1"]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"], ["train", "--help"]])
def test_help_lists_the_commands_and_flags(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "keras-mtl" in out
    if argv[0] == "bench":
        assert "--quality" in out and "ple,cgc,mmoe,shared-bottom" in out


def test_task_options_from_the_command_line():
    from keras_mtl.cli import parse_task

    rating = parse_task("rating:multiclass:num_classes=5")
    assert rating.kind == "multiclass" and rating.num_classes == 5
    assert parse_task("click:pos_weight=4").pos_weight == 4
    assert parse_task("relevance:regression:loss=listmle:group=request").group == "request"
    with pytest.raises(SystemExit, match="pos_weight applies to binary"):
        parse_task("watch:regression:pos_weight=2")


def test_help_and_version_need_no_tensorflow():
    """`keras-mtl --help` / `--version` parse without importing TensorFlow (in a fresh process:
    this one has it already)."""
    import subprocess
    import sys

    # As the `keras-mtl` console script runs it (its argv[0] is the script's path).
    code = ("import sys\nsys.argv[0] = '/venv/bin/keras-mtl'\nfrom keras_mtl.cli import main\n"
            "for argv in (['--version'], ['train', '--help'], ['--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("keras-mtl 0.1.0 (tensorflow ")


def test_train_help_shows_defaults_and_every_balancer(capsys):
    from keras_mtl.balancers.registry import _REGISTRY
    from keras_mtl.cli import BALANCERS

    # The package's own balancers (other tests register test-only ones).
    ours = sorted(n for n, cls in _REGISTRY.items() if cls.__module__.startswith("keras_mtl."))
    assert list(BALANCERS) == ours
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: ew)" in out and "(default: 10)" in out and "(default: ple)" in out
    assert all(name in out for name in BALANCERS)


def test_tensorflow_start_up_chatter_is_recognised_and_nothing_else():
    from keras_mtl._startup import is_startup_chatter

    chatter = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796634825.265170   20682 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1796634825.265503   20682 cudart_stub.cc:31] Could not find cuda drivers",
        "I0000 00:00:1796634825.312041   20682 cpu_feature_guard.cc:227] This TensorFlow binary",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
        "with the appropriate compiler flags.",
    ]
    assert all(is_startup_chatter(line + "\n") for line in chatter)
    kept = ["E0000 00:00:1796635008.668334   22759 cuda_platform.cc:52] failed call to cuInit",
            "W0000 00:00:1.0   1 port.cc:153] a warning", "UserWarning: something", ""]
    assert not any(is_startup_chatter(line) for line in kept)


def test_importing_the_package_registers_every_class():
    """Outside the command line, `import keras_mtl` loads everything: a script may call
    `keras.models.load_model` next without touching a keras_mtl name."""
    import subprocess
    import sys

    code = ("import sys\nimport keras_mtl\n"
            "assert 'keras_mtl.models' in sys.modules and 'MultiTaskModel' in vars(keras_mtl)\n"
            "import keras\n"
            "assert keras.saving.get_registered_object('keras_mtl>MultiTaskModel') is not None\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_bench_first_step_defaults_to_compile_s_auto_and_reads_the_census_path(
        monkeypatch, tmp_path, capsys):
    from keras_mtl.benchmarks import first_step

    calls = {}

    def fake_run(balancers, census_path=None, jit_compile=None, log=print, **bench_model):
        calls.update(balancers=balancers, census_path=census_path, jit_compile=jit_compile,
                     **bench_model)
        row = {"balancer": "ew", "level": "losses", "data": "census", "xla": False,
               "import_seconds": 1.0, "data_seconds": 1.0, "build_seconds": 1.0,
               "first_step_seconds": 2.0, "steady_step_ms": 5.0}
        return {"machine": {"cpu_count": 2, "tensorflow": "t", "keras": "k"},
                "target_seconds": 5.0, "rows": [row]}

    monkeypatch.setattr(first_step, "run", fake_run)
    markdown = os.path.join(tmp_path, "first.md")
    main(["bench", "--first-step", "--data-path", "census.gz", "--markdown", markdown])
    assert calls == {"balancers": list(first_step.DEFAULT_BALANCERS),
                     "census_path": "census.gz", "jit_compile": None}
    assert "Over the 5 s target: none." in capsys.readouterr().out
    assert os.path.exists(markdown)
    main(["bench", "--first-step", "--balancers", "ew,upgrad", "--jit-compile", "true"])
    assert calls["balancers"] == ["ew", "upgrad"] and calls["jit_compile"] is True
    calls.clear()
    main(["bench", "--first-step", "--model", "mmoe", "--tasks", "32", "--jit-compile", "true"])
    assert calls == {"balancers": list(first_step.DEFAULT_BALANCERS), "census_path": None,
                     "jit_compile": True, "architecture": "mmoe", "num_tasks": 32,
                     "batch_size": 2048, "experts": 8, "units": 256}


def test_train_with_a_dbmtl_task_graph_in_task_order(tmp_path, capsys):
    """`--task-graph dbmtl`: every task reads the tasks before it (here y2 ← y1), on any
    backbone; saved and loaded with the graph."""
    import keras_mtl as km

    save = os.path.join(tmp_path, "m.keras")
    assert main(["train", "--model", "mmoe", "--task-graph", "dbmtl", "--epochs", "1",
                 "--num-examples", "400", "--verbose", "0", "--save", save]) == 0
    out = capsys.readouterr().out
    assert "Model: mmoe + DBMTL y2 ← y1 (" in out
    assert set(parse_table(out)) == {"y1", "y2"}
    model = km.load_model(save)
    assert isinstance(model.task_graph, km.layers.DBMTL)
    assert model.task_graph.depends_on == {"y2": ["y1"]}


def test_task_graphs_follow_the_task_list():
    from keras_mtl.benchmarks import presets

    aitm = presets.make_task_graph("aitm", ["click", "add_to_cart", "purchase"])
    assert aitm.sequence == ["click", "add_to_cart", "purchase"]
    dbmtl = presets.make_task_graph("dbmtl", ["click", "add_to_cart", "purchase"])
    assert dbmtl.depends_on == {"add_to_cart": ["click"], "purchase": ["click", "add_to_cart"]}
    with pytest.raises(ValueError, match="Unknown task graph 'esmm'"):
        presets.make_task_graph("esmm", ["click"])


def _funnel_files(folder, rows: int = 240, seed: int = 0) -> dict:
    """Parquet train and CSV validation files of a click → purchase funnel with end-to-end
    labels (purchase 0 without a click), a dwell time, and a string and an id feature."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    user = rng.integers(0, 20, rows)
    click = (rng.random(rows) < 0.3 + 0.02 * (user % 10)).astype(float)
    frame = pd.DataFrame({
        "user": [f"u{u}" for u in user], "item_id": rng.integers(0, 30, rows),
        "price": rng.lognormal(size=rows), "click": click,
        "purchase": click * (rng.random(rows) < 0.4), "dwell": click * rng.exponential(30, rows)})
    os.makedirs(folder / "train")
    cut = rows * 2 // 3
    frame.iloc[:cut // 2].to_parquet(folder / "train" / "part-0.parquet")
    frame.iloc[cut // 2:cut].to_parquet(folder / "train" / "part-1.parquet")
    frame.iloc[cut:].to_csv(folder / "val.csv", index=False)
    return {"train": str(folder / "train" / "*.parquet"), "validation": str(folder / "val.csv")}


def test_train_with_an_aitm_task_graph_on_your_files(tmp_path, capsys):
    """`--task-graph aitm` over `--task` order: click → purchase with end-to-end labels; a step
    on a sample space, or a regression task, is refused with AITM's reason."""
    import keras_mtl as km

    paths = _funnel_files(tmp_path)
    save = os.path.join(tmp_path, "aitm.keras")
    common = ["train", "--data", paths["train"], "--validation-data", paths["validation"],
              "--model", "ple", "--task-graph", "aitm", "--epochs", "1", "--batch-size", "32",
              "--verbose", "0"]
    assert main([*common, "--task", "click", "--task", "purchase", "--save", save]) == 0
    out = capsys.readouterr().out
    assert "Model: ple + AITM click → purchase (" in out
    assert set(parse_table(out[out.index("--validation-data, after"):])) == {"click", "purchase"}
    model = km.load_model(save)
    assert isinstance(model.task_graph, km.layers.AITM)
    assert model.task_graph.sequence == ["click", "purchase"]
    assert main([*common, "--task", "click", "--task", "purchase:sample_space=click"]) == 2
    assert "end-to-end labels" in capsys.readouterr().err
    assert main(["train", "--model", "mmoe", "--task-graph", "aitm", "--epochs", "1",
                 "--num-examples", "200", "--verbose", "0"]) == 2
    assert "must be a binary task" in capsys.readouterr().err


def test_quality_benchmark_on_your_files(tmp_path, capsys):
    """`bench --quality --data`: architectures with ew and a balancer on the first, 2 seeds, 1
    epoch, on Parquet train and CSV validation/test files; each task's headline metric (AUC for
    binary, the first metric otherwise), the learning rate picked on the validation loss since
    AUC and RMSE point different ways."""
    from keras_mtl.benchmarks import quality

    paths = _funnel_files(tmp_path)
    json_path, markdown_path = tmp_path / "files.json", tmp_path / "files.md"
    assert main(["bench", "--quality", "--data", paths["train"], "--validation-data",
                 paths["validation"], "--test-data", paths["validation"], "--task", "click",
                 "--task", "purchase", "--task", "dwell:regression", "--models",
                 "mmoe,shared-bottom", "--balancers", "mgda", "--seeds", "2", "--epochs", "1",
                 "--batch-size", "64", "--json", str(json_path), "--markdown",
                 str(markdown_path)]) == 0
    result = json.loads(json_path.read_text())["files"]
    assert result["metrics"] == {"click": "click_auc", "purchase": "purchase_auc",
                                 "dwell": "dwell_rmse"}
    assert result["pick"].startswith("the mean validation task loss")
    assert result["budget"]["learning_rates"] == list(
        quality.DEFAULT_BUDGETS["files"].learning_rates)  # the grid, as the other experiments
    rows = {r["row"]: r for r in result["rows"]}
    assert list(rows) == ["MMoE + ew", "Shared-Bottom + ew", "MMoE + mgda"]
    for row in rows.values():
        assert row["parameters"] > 0
        for key in ("click_auc", "purchase_auc"):
            assert len(row[key]["runs"]) == 2 and all(0 <= r <= 1 for r in row[key]["runs"])
        assert row["dwell_rmse"]["mean"] > 0
    # The balancer trains at the rate MMoE + ew picked.
    assert rows["MMoE + mgda"]["learning_rate"] == rows["MMoE + ew"]["learning_rate"]
    table = markdown_path.read_text()
    assert "### Your files: test metric per task, mean ± std over 2 seeds" in table
    assert "| model | parameters | click AUC | purchase AUC | dwell rmse | lr |" in table
    assert "inferred" in capsys.readouterr().out  # the spec inference report
    with pytest.raises(SystemExit, match="needs --validation-data"):
        main(["bench", "--quality", "--data", paths["train"], "--task", "click"])
    with pytest.raises(SystemExit, match="go with --data"):
        main(["bench", "--quality", "--task", "click"])


def test_bench_compare_architectures_writes_the_table_and_json(tmp_path, capsys):
    path = os.path.join(tmp_path, "architectures.json")
    main(["bench", "--quick", "--jit-compile", "false", "--model", "mmoe",
          "--compare-architectures", "omoe,shared-bottom", "--tasks", "2", "--json", path])
    with open(path) as handle:
        result = json.load(handle)
    assert [r["architecture"] for r in result["rows"]] == ["MMoE", "OMoE", "Shared-Bottom"]
    assert result["config"]["baseline"] == "MMoE" and result["config"]["num_tasks"] == 2
    assert "| Shared-Bottom |" in capsys.readouterr().out
