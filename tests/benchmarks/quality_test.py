"""`keras-mtl bench --quality --quick`: every experiment's code path on tiny budgets."""

import json
import os

import pytest

from keras_mtl.benchmarks import quality
from keras_mtl.cli import main
from tests.helpers import CENSUS_FILE, SHARED_DATA


@pytest.mark.skipif(not os.path.exists(CENSUS_FILE), reason="shared census data not present")
def test_quality_quick_writes_tables_and_json(tmp_path, capsys):
    json_path, markdown_path = tmp_path / "quality.json", tmp_path / "quality.md"
    assert main(["bench", "--quality", "--quick", "--data-path", SHARED_DATA,
                 "--json", str(json_path), "--markdown", str(markdown_path)]) == 0
    result = json.loads(json_path.read_text())
    census = result["census"]
    rows = {r["row"]: r for r in census["rows"]}
    single = rows["Single-task (one Shared-Bottom model per task)"]
    assert set(rows) == {single["row"], "PLE + mgda"}  # quick: one balancer row
    for row in census["rows"]:
        for task in ("income", "never_married"):
            runs = row[f"{task}_auc"]["runs"]
            assert len(runs) == quality.QUICK_BUDGETS["census"].seeds
            assert all(0.0 <= r <= 1.0 for r in runs)
            # Gain over single-task training (PLE eq. 11) is the difference of the means.
            assert row[f"{task}_gain"] == pytest.approx(
                row[f"{task}_auc"]["mean"] - single[f"{task}_auc"]["mean"])
        assert row["learning_rate"]
    synthetic = result["synthetic"]["rows"]
    assert {(r["correlation"], r["architecture"]) for r in synthetic} == {
        (0.5, "shared-bottom"), (0.5, "mmoe")}
    assert all(r["mean_mse"]["mean"] > 0 for r in synthetic)
    funnel = {r["row"]: r for r in result["funnel"]["rows"]}
    aitm = funnel.pop("PLE + ew, AITM click → purchase (end-to-end labels)")
    assert {"PLE + mgda (sample space)", "PLE + ew (ESMM)",
            "PLE + ew, DBMTL purchase ← click (sample space)"} <= set(funnel)
    for row in funnel.values():  # every multi-task row scores p(click ∧ purchase) too
        if row["architecture"] != "single-task":
            assert 0.0 <= row["ctcvr_auc"]["mean"] <= 1.0
    # AITM predicts p(click ∧ purchase), not pCVR: a CTCVR AUC and a click gain, no purchase AUC.
    assert "purchase_auc" not in aitm and "purchase_gain" not in aitm
    assert 0.0 <= aitm["ctcvr_auc"]["mean"] <= 1.0 and "click_gain" in aitm
    table = markdown_path.read_text()
    assert "### Census-Income" in table and "| PLE + mgda |" in table
    assert "| model | click AUC | purchase AUC | CTCVR AUC |" in table
    assert "| PLE + ew, AITM click → purchase (end-to-end labels) |" in table
    assert "0.9522" in table  # the PLE paper's figure, beside ours
    assert "quick mode" in capsys.readouterr().out


def test_unknown_experiment_is_named():
    with pytest.raises(ValueError, match=r"Unknown quality experiment\(s\) \['censsus'\]"):
        quality.run(["censsus"])


def test_markdown_leaves_an_undefined_gain_empty():
    def summary(mean):
        return {"mean": mean, "std": 0.0, "runs": [mean]}

    row = {"row": "PLE + ew (ESMM)", "click_auc": summary(0.7), "purchase_auc": summary(0.6),
           "click_gain": 0.0125, "purchase_gain": float("nan"), "learning_rate": 1e-3}
    result = {"machine": {"cpu_count": 2, "tensorflow": "x"}, "seconds": 60.0, "quick": True,
              "funnel": {"data": "funnel", "note": "note", "rows": [row],
                         "budget": {"seeds": 1, "epochs": 1, "batch_size": 8,
                                    "learning_rates": [1e-3]}}}
    table = quality.format_markdown(result)
    # A row saved before the CTCVR column: no value, a dash.
    assert ("| PLE + ew (ESMM) | 0.7000 ± 0.0000 | 0.6000 ± 0.0000 | - | +0.0125 |  | 0.001 |"
            in table)


def test_rank_auc_is_the_pairwise_probability_with_ties_at_half():
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.1
    scores = np.round(rng.random(300) * 0.02 + labels * 0.004, 3)  # ~1 %, many ties
    positive, negative = scores[labels], scores[~labels]
    pairs = (positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])
    assert quality.rank_auc(labels, scores) == pytest.approx(pairs.mean(), abs=1e-12)
    assert quality.rank_auc([1, 0, 1], [0.3, 0.2, 0.1]) == pytest.approx(0.5)
    assert np.isnan(quality.rank_auc([0, 0], [0.1, 0.2]))


def test_ctcvr_readout_scores_click_and_purchase_on_every_row():
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"click": [1.0, 1.0, 0.0, 0.0], "purchase": [1.0, 0.0, np.nan, np.nan]})
    readout = quality.ctcvr_readout(lambda p: p["click"] * p["purchase"])
    # Only row 0 is click ∧ purchase; its product ranks first, the unclicked rows' below.
    logs = readout({"click": np.array([[0.9], [0.8], [0.5], [0.1]]),
                    "purchase": np.array([[0.5], [0.1], [0.3], [0.9]])}, frame)
    assert logs == {"ctcvr_auc": pytest.approx(1.0)}
    # AITM's labels: purchase 0 off clicks, both tasks over every impression.
    from keras_mtl.datasets.base import MultiTaskDataset
    from keras_mtl.tasks import Task

    data = MultiTaskDataset("funnel", frame, frame, frame, features=None,
                            tasks=[Task("click"), Task("purchase", sample_space="click")])
    end_to_end = quality.end_to_end_funnel(data)
    assert list(end_to_end.test["purchase"]) == [1, 0, 0, 0]
    assert [(t.name, t.sample_space) for t in end_to_end.tasks] == [
        ("click", None), ("purchase", None)]
    assert frame["purchase"].isna().sum() == 2  # the original is left alone


def test_headline_metric_and_its_direction():
    from keras_mtl.tasks import Task

    assert quality.headline_metric(Task("click")) == "click_auc"
    assert quality.headline_metric(Task("dwell", kind="regression")) == "dwell_rmse"
    assert quality.headline_metric(Task("click", metrics=["logloss"])) == "click_logloss"
    assert quality.headline_metric(Task("rating", kind="multiclass", num_classes=3)) == (
        "rating_accuracy")
    assert quality._direction(Task("click"), "click_auc") is True
    assert quality._direction(Task("dwell", kind="regression"), "dwell_rmse") is False
    assert quality._direction(Task("value", kind="regression"), "value_pcoc") is None


def test_update_merges_the_experiments_run_into_the_saved_result(tmp_path, monkeypatch, capsys):
    """`--update`: the funnel rerun replaces the saved funnel; Census stays the first run's."""
    from keras_mtl.benchmarks import parallel

    machine = {"cpu_count": 2, "tensorflow": "x"}
    saved = {"quick": False, "machine": machine, "jobs": 2, "seconds": 2100.0,
             "census": {"old": True}, "funnel": {"old": True}}
    funnel = _funnel_result()
    monkeypatch.setattr(parallel, "run", lambda experiments, **_: {
        "quick": False, "machine": machine, "jobs": 1, "seconds": 600.0, "funnel": funnel})
    monkeypatch.setattr(quality, "format_markdown", lambda r: "TABLES " + json.dumps(
        r.get("updates")))
    path = tmp_path / "quality.json"
    path.write_text(json.dumps(saved))
    assert main(["bench", "--quality", "--experiments", "funnel", "--jobs", "1", "--update",
                 "--json", str(path), "--markdown", str(tmp_path / "quality.md")]) == 0
    merged = json.loads(path.read_text())
    assert merged["census"] == {"old": True} and merged["funnel"] == funnel
    assert merged["seconds"] == 2100.0 and merged["jobs"] == 2  # the first run's
    assert merged["updates"] == [{"experiments": ["funnel"], "seconds": 600.0, "jobs": 1,
                                  "machine": machine}]
    assert (tmp_path / "quality.md").read_text().startswith("TABLES [{")
    with pytest.raises(SystemExit, match="--update needs --json"):
        main(["bench", "--quality", "--experiments", "funnel", "--update"])
    with pytest.raises(ValueError, match="quick-mode result with a full one"):
        quality.merge(saved, {**saved, "quick": True})


def _funnel_result() -> dict:
    def summary(mean):
        return {"mean": mean, "std": 0.0, "runs": [mean]}

    row = {"row": "PLE + ew, AITM click → purchase (end-to-end labels)", "architecture": "ple",
           "balancer": "ew", "click_auc": summary(0.6), "ctcvr_auc": summary(0.7),
           "click_gain": 0.01, "learning_rate": 1e-3}
    return {"data": "funnel", "note": "note", "rows": [row], "seconds": 600.0,
            "budget": {"seeds": 1, "epochs": 1, "batch_size": 8, "learning_rates": [1e-3]}}


def test_merged_markdown_says_what_was_rerun():
    machine = {"cpu_count": 2, "tensorflow": "x"}
    merged = quality.merge({"quick": False, "machine": machine, "seconds": 2100.0, "jobs": 2},
                           {"quick": False, "machine": machine, "seconds": 600.0,
                            "funnel": _funnel_result()})
    table = quality.format_markdown(merged)
    assert table.startswith("Machine: 2 CPU cores, TensorFlow x; total 35 min with 2 processes")
    assert ("Rerun since and merged into this file: funnel (10 min, 1 process, 2 CPU cores, "
            "TensorFlow x); the other experiments are the first run's.") in table
    assert ("| PLE + ew, AITM click → purchase (end-to-end labels) | 0.6000 ± 0.0000 | - | "
            "0.7000 ± 0.0000 | +0.0100 |  | 0.001 |") in table


def test_movielens_history_experiment_runs_on_grouplens_files(tmp_path, capsys):
    """The history row and its baseline, through the CLI, on ML-100K-layout files written here
    (60 users × 25 ratings; `liked` depends on whether the user liked the movie before)."""
    import numpy as np

    from tests.datasets.movielens_files_test import write_100k

    rng = np.random.default_rng(0)
    ratings = [(1 + u % 3, 1 + int(m), int(rng.integers(1, 6)), int(t))
               for u in range(60) for t, m in enumerate(rng.integers(0, 4, 25))]
    write_100k(str(tmp_path / "ml-100k"), ratings)
    json_path = tmp_path / "quality.json"
    assert main(["bench", "--quality", "--quick", "--experiments", "movielens",
                 "--movielens-path", str(tmp_path / "ml-100k"), "--json", str(json_path)]) == 0
    rows = json.loads(json_path.read_text())["movielens"]["rows"]
    assert [r["row"] for r in rows] == [
        "PLE + ew, no history", f"PLE + ew, history of {quality.MOVIELENS_HISTORY} (DIN attention)"]
    for row in rows:
        assert len(row["liked_auc"]["runs"]) == quality.QUICK_BUDGETS["movielens"].seeds
        assert all(0.0 <= r <= 1.0 for r in row["liked_auc"]["runs"])
        assert row["rating_rmse"]["mean"] > 0
    assert rows[1]["liked_auc_gain"] == pytest.approx(
        rows[1]["liked_auc"]["mean"] - rows[0]["liked_auc"]["mean"])
    assert "### MovieLens: what the user history adds" in capsys.readouterr().out


@pytest.mark.skipif(not os.path.exists(CENSUS_FILE), reason="shared census data not present")
def test_architectures_experiment_quick(tmp_path, capsys):
    """`--experiments architectures`: Census and synthetic rows per architecture with ew and
    their parameter counts (quick mode: two of them, PEPNet on numeric features only)."""
    json_path, markdown_path = tmp_path / "arch.json", tmp_path / "arch.md"
    assert "architectures" not in quality.DEFAULT_EXPERIMENTS  # the default run does not grow
    assert main(["bench", "--quality", "--quick", "--experiments", "architectures", "--jobs", "1",
                 "--data-path", SHARED_DATA, "--json", str(json_path),
                 "--markdown", str(markdown_path)]) == 0
    result = json.loads(json_path.read_text())["architectures"]
    assert result["architectures"] == list(quality.QUICK_ARCHITECTURES)
    census = {r["row"]: r for r in result["census"]["rows"]}
    assert list(census) == ["Single-task (one Shared-Bottom model per task)", "MMoE + ew",
                            "PEPNet + ew"]
    for row in list(census.values())[1:]:
        assert row["parameters"] > 0 and row["balancer"] == "ew"
        assert row["income_gain"] == pytest.approx(
            row["income_auc"]["mean"] - census[
                "Single-task (one Shared-Bottom model per task)"]["income_auc"]["mean"])
    synthetic = result["synthetic"]["rows"]
    assert [(r["correlation"], r["architecture"]) for r in synthetic] == [
        (0.5, "mmoe"), (0.5, "pepnet")]
    assert all(r["mean_mse"]["mean"] > 0 and r["parameters"] > 0 for r in synthetic)
    table = markdown_path.read_text()
    assert "### Architectures on Census-Income" in table
    assert "| model | parameters | p = 0.5 | lr |" in table
    assert "Lowest MSE first at p = 0.5:" in table
