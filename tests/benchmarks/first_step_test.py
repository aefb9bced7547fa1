"""keras_mtl.benchmarks.first_step: a fresh process per balancer times the quickstart's first step,
and the table says which rows miss the target."""

import json

from keras_mtl.benchmarks import first_step


def test_one_fresh_process_times_the_first_step_after_import_data_and_build():
    result = first_step.run(["mgda@representation"], log=lambda line: None)
    (row,) = result["rows"]
    assert row["balancer"] == "mgda" and row["level"] == "representation"
    assert row["data"] == "synthetic" and row["xla"] is False  # Keras' auto: no XLA on CPU
    for key in ("import_seconds", "data_seconds", "build_seconds", "first_step_seconds"):
        assert row[key] > 0
    assert row["import_seconds"] > 0.5  # TensorFlow's import is timed, not done before the clock
    # The first step traces and optimises the graph: slower than a steady step.
    assert row["first_step_seconds"] > row["steady_step_ms"] / 1000
    assert "| mgda | representation |" in first_step.format_markdown(result)


def test_the_table_names_the_rows_over_the_target(capsys):
    row = {"balancer": "ew", "level": "losses", "data": "census", "xla": False,
           "import_seconds": 4.0, "data_seconds": 2.0, "build_seconds": 0.5,
           "first_step_seconds": 3.0, "steady_step_ms": 10.0}
    slow = dict(row, balancer="gradvac", level="parameters", first_step_seconds=7.5)
    table = first_step.format_markdown({"machine": {"cpu_count": 2, "tensorflow": "x",
                                                    "keras": "y"},
                                        "target_seconds": 5.0, "rows": [row, slow]})
    assert "Census-Income" in table and "Over the 5 s target: gradvac@parameters." in table
    first_step.main(["--balancer", "ew", "--jit-compile", "false"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["balancer"] == "ew" and printed["xla"] is False


def test_the_benchmark_model_in_a_fresh_process_has_the_many_task_target():
    result = first_step.run(["ew"], jit_compile=False, log=lambda line: None,
                            architecture="mmoe", num_tasks=3, batch_size=64, experts=2, units=8)
    (row,) = result["rows"]
    assert row["data"] == "mmoe, K = 3, 2 × 8, batch 64" and row["xla"] is False
    assert row["first_step_seconds"] > 0 and row["steady_step_ms"] > 0
    assert result["target_seconds"] == first_step.MANY_TASKS_TARGET_SECONDS
    table = first_step.format_markdown(result)
    assert "the throughput benchmark's mmoe, K = 3" in table and "Over the 30 s target" in table
