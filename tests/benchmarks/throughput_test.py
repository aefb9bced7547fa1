"""keras_mtl.benchmarks.throughput: the floor step computes real gradients, the grid runs every
configuration, summaries read the rows right, the default set covers every balancer."""

import keras
import numpy as np
import pytest

from keras_mtl import balancers
from keras_mtl.benchmarks import presets, throughput


@pytest.mark.parametrize("architecture", ["mmoe", "ple"])
def test_floor_step_applies_the_summed_loss_gradient(architecture):
    # K backward passes from the cut, summed, are the gradient of the summed loss: with SGD the
    # floor and the plain step must make the same update from the same weights.
    features, tasks, x, y = throughput.bench_data(num_tasks=3, batch_size=64, seed=0)
    models = []
    for per_task in (False, True):
        keras.utils.set_random_seed(0)
        model = throughput.build_model(architecture, features, tasks, experts=4, units=8)
        model.compile(optimizer=keras.optimizers.SGD(0.5), balancer="ew", jit_compile=False)
        model(x)
        before = [np.array(w) for w in model.get_weights()]
        throughput.floor_step(model, jit_compile=False, per_task=per_task)(x, y)
        models.append((model, before))
    (plain, before_plain), (floor, before_floor) = models
    for a, b in zip(before_plain, before_floor, strict=True):
        np.testing.assert_array_equal(a, b)
    moved = 0
    for a, b, old in zip(plain.get_weights(), floor.get_weights(), before_plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        moved += int(not np.allclose(a, old))
    assert moved > 4  # trunk, gates and heads all moved


def test_floor_step_updates_an_embedding_table_left_out_of_the_matrix():
    # The table is outside the parameter-level matrix (`partition.unbalanced_tables`): the floor
    # still trains it, with one pass of the summed cut gradient, as the plain step does.
    features, tasks, x, y = throughput.bench_data(num_tasks=2, batch_size=32, seed=0,
                                                  embedding_rows=100)
    updates = []
    for per_task in (False, True):
        keras.utils.set_random_seed(0)
        model = throughput.build_model("mmoe", features, tasks, experts=2, units=4)
        model.compile(optimizer=keras.optimizers.SGD(0.5), balancer="ew", jit_compile=False)
        (table,) = model.partition.unbalanced_tables
        before = np.array(table)
        throughput.floor_step(model, jit_compile=False, per_task=per_task)(x, y)
        updates.append(np.array(table) - before)
    assert np.abs(updates[0]).max() > 0
    np.testing.assert_allclose(updates[1], updates[0], rtol=1e-4, atol=1e-7)


def test_grid_runs_every_configuration_and_the_embedding_case():
    result = throughput.run_grid(["ew@representation"], architectures=("cgc",),
                                 task_counts=(2, 3), jit_modes=(False,), embedding_rows=50_000,
                                 embedding_balancers=["multibalance", "mgda"], batch_size=32,
                                 experts=2, units=4, steps=1, windows=1, warmup=0, floor=False,
                                 log=lambda _: None)
    configs = [(r["config"]["architecture"], r["config"]["num_tasks"],
                r["config"]["embedding_rows"]) for r in result["runs"]]
    assert configs == [("cgc", 2, 0), ("cgc", 3, 0), ("cgc", 2, 50_000)]
    # The embedding case runs its own set (ew first, as everywhere).
    assert [r["balancer"] for r in result["runs"][-1]["rows"]] == ["ew", "multibalance", "mgda"]
    for run in result["runs"]:
        # One ew window beside each other row's window: its row is their median.
        windows = run["ew_ms_windows"]
        assert len(windows) == len(run["rows"]) - 1
        assert run["rows"][0]["step_ms"] == pytest.approx(np.median(windows))
        assert run["rows"][0]["ratio_to_ew"] == pytest.approx(1.0)
        # One pair per row: no spread to judge the ratio by, so every row says so.
        assert all(r["noisy"] for r in run["rows"][1:])
    assert {"cpu_count", "tensorflow", "keras", "memory_statistics"} <= set(result["machine"])
    table = throughput.format_markdown(result)
    assert "| configuration |" in table and "50,000-row embedding table" in table


def test_summary_spans_levels_and_leaves_every_k_apart():
    def row(balancer, level, ratio, floor=None, memory=1.0):
        return {"balancer": balancer, "level": level, "ratio_to_ew": ratio,
                "examples_per_second": 100 * ratio, "ratio_to_floor": floor,
                "memory_ratio_to_ew": memory}

    run = {"config": {"architecture": "mmoe", "experts": 8, "expert_units": 256,
                      "num_tasks": 4, "batch_size": 2048, "jit_compile": True},
           "floor_ratio_to_ew": 0.5,
           "rows": [row("ew", "losses", 1.0), row("uw", "losses", 0.9),
                    row("ew", "representation", 0.8), row("gradnorm", "representation", 0.4),
                    row("multibalance", "representation", 0.6, memory=1.3),
                    row("ew", "parameters", 0.45, 0.9), row("mgda", "parameters", 0.3, 0.6),
                    row("upgrad (every 10)", "parameters", 0.7, 1.4)]}
    (summary,) = throughput.summary_rows({"runs": [run]})
    assert summary["losses"] == "0.90"
    assert summary["representation"] == "0.40–0.60"
    assert summary["ew_representation"] == 0.8 and summary["ew_parameters"] == 0.45
    assert summary["parameters"] == "0.30"
    assert summary["every_k"] == "0.70"
    assert summary["parameters_to_floor"] == "0.60–0.90"
    assert summary["memory"] == "1.00–1.30"
    assert summary["floor"] == 0.5


def test_default_set_covers_every_registered_balancer():
    names = {presets.parse_balancer(spec)[0] for spec in throughput.default_balancers()}
    assert names == {n for n in balancers.available() if not n.startswith("_")}
    assert presets.parse_balancer("nash_mtl@representation*10") == (
        "nash_mtl", {"level": "representation", "every": 10})


def test_quick_settings_shrink_everything_but_a_smaller_batch():
    full = throughput.settings(batch_size=2048, experts=8, units=256, steps=10, windows=5)
    assert full == dict(batch_size=2048, experts=8, units=256, steps=10, windows=5)
    quick = throughput.settings(batch_size=2048, experts=8, units=256, steps=10, windows=5,
                                quick=True)
    assert quick == dict(batch_size=256, experts=4, units=32, steps=20, windows=3, warmup=1)
    assert throughput.settings(64, 8, 256, 10, 5, quick=True)["batch_size"] == 64


def test_ranker_configuration_compiles_string_features_and_compares_them_with_ids():
    result = throughput.run_grid(
        ["ew"], architectures=("mmoe",), task_counts=(2,), ranker_rows=50, floor=False,
        embedding_balancers=("ew@representation",), log=lambda line: None,
        batch_size=32, experts=2, units=8, steps=1, windows=1, warmup=0)
    assert len(result["runs"]) == 2  # the grid's one configuration, then the ranker's
    strings = result["runs"][-1]
    assert strings["config"]["ranker"] == "strings" and strings["xla"] is True
    assert [r["balancer"] for r in strings["rows"]] == ["ew", "ew"]
    summary = throughput.ranker_summary(result)
    assert summary["xla"] is True and summary["pairs"] == 6
    assert summary["ew_strings_over_ids"] > 0 and summary["lookup_examples_per_second"] > 0
    assert "the string model's step compiled with XLA" in throughput.format_markdown(result)


class _FakeStepper:
    """A stepper whose windows take the given seconds, in order."""

    def __init__(self, seconds):
        self.seconds = list(seconds)

    def window(self, steps):
        return self.seconds.pop(0)


def test_interleaved_pairs_each_row_with_an_adjacent_baseline_window():
    # The baseline slows down 2x half-way (a busy machine); a row that costs exactly what the
    # baseline costs must read 1.0 in every pair, however late it is timed.
    base = _FakeStepper([1.0, 1.0, 2.0, 2.0])
    same = _FakeStepper([1.0, 2.0])
    slower = _FakeStepper([1.25, 2.5])
    result = throughput.interleaved(base, [same, slower], steps=1, windows=2)
    assert result["rows"][0]["ratio"] == pytest.approx(1.0)
    assert result["rows"][1]["ratio"] == pytest.approx(0.8)
    assert result["rows"][1]["span"] == pytest.approx((0.8, 0.8))
    assert not result["rows"][1]["noisy"]
    assert result["baseline_seconds"] == pytest.approx(1.5)
    assert result["baseline_drift"] == pytest.approx(2 / 3)


def test_a_window_does_not_depend_on_what_ran_before_it(monkeypatch):
    """Steps cost 1 s on a fake clock, plus 0.5 s when the step before was another model's (a
    switching cost). Identical rows must read exactly 1.0 whatever their index, though in the
    interleaving the baseline's window sometimes follows its own window and sometimes a row's."""
    clock = {"now": 0.0, "last": None}

    def stepper(name):
        def step():
            clock["now"] += 1.0 + (0.5 if clock["last"] not in (None, name) else 0.0)
            clock["last"] = name
            return 0.0
        return throughput.Stepper(step)

    monkeypatch.setattr(throughput.time, "perf_counter", lambda: clock["now"])
    rows = [stepper(f"row {i}") for i in range(4)]
    result = throughput.interleaved(stepper("ew"), rows, steps=3, windows=3)
    assert [row["ratio"] for row in result["rows"]] == [pytest.approx(1.0)] * 4
    assert result["baseline_drift"] == pytest.approx(0.0)


def test_a_ratio_inside_its_own_spread_is_flagged_as_noise():
    # Pairs read 0.9, 1.1 and 1.05: the median (1.05) is closer to 1 than the pairs' spread (0.2).
    base = _FakeStepper([0.9, 1.1, 1.05])
    row = _FakeStepper([1.0, 1.0, 1.0])
    (noisy,) = throughput.interleaved(base, [row], steps=1, windows=3)["rows"]
    assert noisy["ratio"] == pytest.approx(1.05) and noisy["noisy"]
    base = _FakeStepper([0.5, 0.55, 0.6])
    (clear,) = throughput.interleaved(base, [_FakeStepper([1.0] * 3)], steps=1, windows=3)["rows"]
    assert clear["ratio"] == pytest.approx(0.55) and not clear["noisy"]


def test_warnings_name_noisy_rows_and_a_drifting_baseline():
    run = {"config": {"architecture": "mmoe", "experts": 4, "expert_units": 32, "num_tasks": 2,
                      "batch_size": 256, "jit_compile": True},
           "ew_drift": 0.4,
           "rows": [{"balancer": "ew", "level": "losses", "noisy": False},
                    {"balancer": "dwa", "level": "losses", "noisy": True},
                    {"balancer": "mgda", "level": "parameters", "noisy": False}]}
    noise, drift = throughput.warnings({"runs": [run]})
    assert "1 of 2 rows" in noise and "dwa@losses" in noise and "mgda" not in noise
    assert "40 %" in drift
    run["ew_drift"], run["rows"][1]["noisy"] = 0.05, False
    assert throughput.warnings({"runs": [run]}) == []


def test_architectures_are_timed_against_the_baseline_in_window_pairs():
    result = throughput.architectures_against(
        ["omoe", "mmoe", "stem"], baseline="mmoe", num_tasks=2, batch_size=32, experts=2, units=4,
        steps=1, windows=2, warmup=0, jit_compile=False)
    rows = {r["architecture"]: r for r in result["rows"]}
    assert list(rows) == ["MMoE", "OMoE", "STEM"]  # the baseline once, first
    assert rows["MMoE"]["ratio"] == 1.0 and rows["MMoE"]["ratio_span"] is None
    for name in ("OMoE", "STEM"):
        assert rows[name]["ratio"] > 0 and len(rows[name]["ratio_span"]) == 2
        assert rows[name]["parameters"] > 0 and rows[name]["first_step_seconds"] > 0
    # OMoE's single gate has fewer parameters than MMoE's one gate per task.
    assert rows["OMoE"]["parameters"] < rows["MMoE"]["parameters"]
    table = throughput.format_architectures(result)
    assert "| STEM |" in table and "× MMoE" in table
