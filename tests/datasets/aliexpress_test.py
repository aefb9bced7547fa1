"""AliExpress from small files written here in MTReclib's / torch-rechub's exact layout."""

import os

import numpy as np
import pandas as pd
import pytest

import keras_mtl as km
from keras_mtl.datasets import load_aliexpress
from keras_mtl.datasets.aliexpress import CATEGORICAL, COLUMNS, NUMERICAL


def aliexpress_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = {"search_id": np.sort(rng.integers(0, rows // 4 + 1, rows))}
    for i, name in enumerate(CATEGORICAL):
        frame[name] = rng.integers(0, 3 + 5 * i, rows)
    for name in NUMERICAL:
        frame[name] = np.round(rng.uniform(size=rows), 4)
    click = (rng.uniform(size=rows) < 0.3).astype(int)
    frame["click"] = click
    frame["conversion"] = click * (rng.uniform(size=rows) < 0.3)
    return pd.DataFrame(frame)[COLUMNS]


def write_country(folder, country="NL", train_rows=200, test_rows=60):
    where = os.path.join(folder, f"AliExpress_{country}")
    os.makedirs(where, exist_ok=True)
    aliexpress_frame(train_rows, 0).to_csv(os.path.join(where, "train.csv"), index=False)
    aliexpress_frame(test_rows, 1).to_csv(os.path.join(where, "test.csv"), index=False)
    return where


def test_tasks_features_and_splits(tmp_path):
    write_country(tmp_path, "ES")
    data = load_aliexpress(str(tmp_path), country="es", seed=3)
    assert data.name == "aliexpress-es"
    assert (len(data.train), len(data.validation), len(data.test)) == (180, 20, 60)
    click, conversion = data.tasks
    assert (click.name, click.kind, click.sample_space) == ("click", "binary", None)
    assert (conversion.name, conversion.sample_space) == ("conversion", "click")
    kinds = {f.name: type(f).__name__ for f in data.features}
    assert [n for n, k in kinds.items() if k == "IntegerId"] == CATEGORICAL
    assert [n for n, k in kinds.items() if k == "Numeric"] == NUMERICAL
    assert "search_id" not in kinds and "search_id" in data.train
    # num_ids covers every code of every split; Numeric statistics are the train split's.
    for name in CATEGORICAL:
        assert data.features[name].num_ids == max(
            int(s[name].max()) for s in (data.train, data.validation, data.test)) + 1
    assert data.features["numerical_5"].mean == pytest.approx(data.train["numerical_5"].mean(),
                                                              rel=1e-5)
    assert data.train["click"].dtype == np.float32


def test_conversion_modes_and_the_country_folder_itself(tmp_path):
    folder = write_country(tmp_path)
    esmm = load_aliexpress(folder, conversion="esmm").tasks[1]
    assert esmm.esmm_parent == "click" and esmm.sample_space is None
    plain = load_aliexpress(folder, conversion="impressions").tasks[1]
    assert plain.esmm_parent is None and plain.sample_space is None
    with pytest.raises(ValueError, match="conversion must be one of"):
        load_aliexpress(folder, conversion="ctcvr")


def test_one_file_max_rows_and_torch_rechub_names(tmp_path):
    aliexpress_frame(100).to_csv(tmp_path / "aliexpress_train_sample.csv", index=False)
    aliexpress_frame(30, 1).to_csv(tmp_path / "aliexpress_test_sample.csv", index=False)
    data = load_aliexpress(str(tmp_path), max_rows=50)
    assert len(data.train) + len(data.validation) == 50 and len(data.test) == 30
    single = load_aliexpress(str(tmp_path / "aliexpress_train_sample.csv"))
    assert (len(single.train), len(single.validation), len(single.test)) == (80, 10, 10)


def test_malformed_files_name_the_file_column_and_line(tmp_path):
    folder = write_country(tmp_path)
    train = os.path.join(folder, "train.csv")
    frame = pd.read_csv(train)
    frame.drop(columns=["numerical_7"]).to_csv(train, index=False)
    with pytest.raises(ValueError, match=r"train\.csv: no column 'numerical_7'"):
        load_aliexpress(folder)
    bad = frame.astype({"categorical_3": object})
    bad.loc[4, "categorical_3"] = "x9"
    bad.to_csv(train, index=False)
    with pytest.raises(ValueError, match=r"train\.csv, line 6, column 'categorical_3': 'x9'"):
        load_aliexpress(folder)
    frame.loc[2, "click"] = 2
    frame.to_csv(train, index=False)
    with pytest.raises(ValueError, match=r"line 4, column 'click': label 2 is not 0 or 1"):
        load_aliexpress(folder)
    with pytest.raises(FileNotFoundError, match="No AliExpress FR files"):
        load_aliexpress(str(tmp_path), country="FR")


def test_a_few_training_steps_on_the_loaded_data(tmp_path):
    data = load_aliexpress(write_country(tmp_path, train_rows=512))
    model = km.MultiTaskModel(features=data.features, tasks=data.tasks,
                              backbone=km.layers.MMoE(num_experts=2, expert_units=[8]),
                              tower_units=[4])
    model.compile(optimizer="adam")
    history = model.fit(data.as_tf_dataset("train", batch_size=128), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    results = model.evaluate(data.as_tf_dataset("test", batch_size=64), return_dict=True, verbose=0)
    assert "click_auc" in results and "conversion_auc" in results
