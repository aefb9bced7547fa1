"""keras_mtl.bench: the floor step computes real gradients, summaries read the rows right."""

import keras
import numpy as np
import pytest

from keras_mtl import bench


@pytest.mark.parametrize("architecture", ["mmoe", "ple"])
def test_floor_step_applies_the_summed_loss_gradient(architecture):
    # K backward passes from the cut, summed, are the gradient of the summed loss: with SGD the
    # floor and the plain step must make the same update from the same weights.
    features, tasks, x, y = bench.bench_data(num_tasks=3, batch_size=64, seed=0)
    models = []
    for per_task in (False, True):
        keras.utils.set_random_seed(0)
        model = bench._model(architecture, features, tasks, experts=4, units=8)
        model.compile(optimizer=keras.optimizers.SGD(0.5), balancer="ew", jit_compile=False)
        model(x)
        before = [np.array(w) for w in model.get_weights()]
        bench.floor_step(model, jit_compile=False, per_task=per_task)(x, y)
        models.append((model, before))
    (plain, before_plain), (floor, before_floor) = models
    for a, b in zip(before_plain, before_floor, strict=True):
        np.testing.assert_array_equal(a, b)
    moved = 0
    for a, b, old in zip(plain.get_weights(), floor.get_weights(), before_plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        moved += int(not np.allclose(a, old))
    assert moved > 4  # trunk, gates and heads all moved


def test_grid_runs_every_configuration_and_the_embedding_case():
    result = bench.run_grid(["ew@representation"], architectures=("cgc",),
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
        # ew is timed first and last; its row (the baseline of every ratio) is the faster timing.
        first, last = run["ew_ms_first_and_last"]
        assert run["rows"][0]["step_ms"] == pytest.approx(min(first, last))
        assert run["rows"][0]["ratio_to_ew"] == pytest.approx(1.0)
    table = bench.format_markdown(result)
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
    (summary,) = bench.summary_rows({"runs": [run]})
    assert summary["losses"] == "0.90"
    assert summary["representation"] == "0.40–0.60"
    assert summary["ew_representation"] == 0.8 and summary["ew_parameters"] == 0.45
    assert summary["parameters"] == "0.30"
    assert summary["every_k"] == "0.70"
    assert summary["parameters_to_floor"] == "0.60–0.90"
    assert summary["memory"] == "1.00–1.30"
    assert summary["floor"] == 0.5
