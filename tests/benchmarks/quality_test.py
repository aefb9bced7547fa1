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
    funnel = {r["row"] for r in result["funnel"]["rows"]}
    assert {"PLE + mgda (sample space)", "PLE + ew (ESMM)"} <= funnel
    table = markdown_path.read_text()
    assert "### Census-Income" in table and "| PLE + mgda |" in table
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
    assert "| PLE + ew (ESMM) | 0.7000 ± 0.0000 | 0.6000 ± 0.0000 | +0.0125 |  | 0.001 |" in table


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
