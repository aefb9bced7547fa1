"""Ali-CCP from small files written here in torch-rechub's preprocessed layout and in Tianchi's raw
skeleton + common-features layout."""

import os

import numpy as np
import pandas as pd
import pytest

import keras_mtl as km
from keras_mtl.datasets import load_ali_ccp
from keras_mtl.datasets.ali_ccp import COLUMNS, DENSE, SPARSE


def preprocessed_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    click = (rng.uniform(size=rows) < 0.3).astype(int)
    frame = {"click": click, "purchase": click * (rng.uniform(size=rows) < 0.4)}
    for i, name in enumerate(SPARSE):
        frame[name] = rng.integers(0, 2 + 3 * i, rows)
    for name in DENSE:
        frame[name] = np.round(rng.uniform(size=rows), 4)
    return pd.DataFrame(frame)[COLUMNS]


def write_preprocessed(folder, rows=(120, 40, 40), suffix=""):
    for name, count, seed in zip(("train", "val", "test"), rows, (0, 1, 2), strict=True):
        preprocessed_frame(count, seed).to_csv(
            os.path.join(folder, f"ali_ccp_{name}{suffix}.csv"), index=False)


def features(pairs) -> str:
    return "\x01".join(f"{field}\x02{feature}\x03{value}" for field, feature, value in pairs)


def write_raw(folder, split="train"):
    """Four samples over two common-feature lines; sample 3 converts without a click (dropped)."""
    common = [
        ("aaaa", [("101", 11, 1.0), ("121", 5, 1.0), ("109_14", 700, 2.0), ("109_14", 701, 3.0),
                  ("999", 1, 1.0)]),
        ("bbbb", [("101", 12, 1.0), ("124", 6, 1.0), ("150_14", 900, 0.5)]),
    ]
    samples = [
        (1, 1, 0, "aaaa", [("205", 31, 1.0), ("206", 41, 1.0), ("508", 51, 0.25)]),
        (2, 1, 1, "bbbb", [("205", 32, 1.0), ("853", 61, 4.0), ("301", 1, 1.0)]),
        (3, 0, 1, "aaaa", [("205", 33, 1.0)]),
        (4, 0, 0, "bbbb", [("205", 31, 1.0), ("216", 71, 1.0)]),
    ]
    with open(os.path.join(folder, f"common_features_{split}.csv"), "w") as f:
        f.writelines(f"{md5},{len(items)},{features(items)}\n" for md5, items in common)
    with open(os.path.join(folder, f"sample_skeleton_{split}.csv"), "w") as f:
        f.writelines(f"{sid},{click},{conv},{md5},{len(items)},{features(items)}\n"
                     for sid, click, conv, md5, items in samples)


def test_preprocessed_layout_tasks_features_and_splits(tmp_path):
    write_preprocessed(tmp_path)
    data = load_ali_ccp(str(tmp_path))
    assert data.name == "ali-ccp" and "preprocessed" in data.description
    assert (len(data.train), len(data.validation), len(data.test)) == (120, 40, 40)
    click, purchase = data.tasks
    assert (click.name, click.kind) == ("click", "binary")
    assert (purchase.name, purchase.sample_space, purchase.esmm_parent) == ("purchase", "click",
                                                                            None)
    kinds = {f.name: type(f).__name__ for f in data.features}
    assert [n for n, k in kinds.items() if k == "IntegerId"] == SPARSE
    assert [n for n, k in kinds.items() if k == "Numeric"] == DENSE
    assert data.features["109_14"].num_ids == max(
        int(s["109_14"].max()) for s in (data.train, data.validation, data.test)) + 1
    esmm = load_ali_ccp(str(tmp_path), conversion="esmm").tasks[1]
    assert esmm.esmm_parent == "click" and esmm.sample_space is None


def test_sample_files_max_rows_and_one_file(tmp_path):
    write_preprocessed(tmp_path, suffix="_sample")
    data = load_ali_ccp(str(tmp_path), max_rows=25)
    assert (len(data.train), len(data.validation), len(data.test)) == (25, 25, 25)
    single = load_ali_ccp(str(tmp_path / "ali_ccp_train_sample.csv"), fractions=(0.5, 0.25, 0.25))
    assert (len(single.train), len(single.validation), len(single.test)) == (60, 30, 30)


def test_raw_layout_joins_common_features(tmp_path):
    write_raw(tmp_path, "train")
    write_raw(tmp_path, "test")
    data = load_ali_ccp(str(tmp_path), validation_fraction=0.34, min_count=1)
    assert "raw layout" in data.description and "2 purchase-without-click rows dropped" in \
        data.description
    rows = pd.concat([data.train, data.validation], ignore_index=True)
    assert len(rows) == 3 and len(data.test) == 3
    # Sample 1: its own item fields, the user fields of common line aaaa; the last 109_14 id wins.
    first = rows[rows["206"] == 41].iloc[0]
    assert (first["101"], first["121"], first["206"], first["109_14"]) == (11, 5, 41, 701)
    assert first["D109_14"] == pytest.approx(3.0) and first["D508"] == pytest.approx(0.25)
    assert (first["click"], first["purchase"]) == (1.0, 0.0)
    second = rows[rows["205"] == 32].iloc[0]
    assert (second["101"], second["124"], second["853"], second["121"]) == (12, 6, 61, 0)
    assert (second["click"], second["purchase"]) == (1.0, 1.0)
    assert second["D150_14"] == pytest.approx(0.5) and second["D853"] == pytest.approx(4.0)
    kinds = {type(f).__name__ for f in data.features if f.name in SPARSE}
    assert kinds == {"Categorical"}
    assert data.features["101"].dtype == "int64"


def test_raw_skeleton_file_alone_and_max_rows(tmp_path):
    write_raw(tmp_path, "train")
    data = load_ali_ccp(str(tmp_path / "sample_skeleton_train.csv"), max_rows=2, min_count=1,
                        fractions=(0.5, 0.5, 0.0))
    assert len(data.train) + len(data.validation) + len(data.test) == 2


def test_malformed_files_name_the_file_column_and_line(tmp_path):
    write_preprocessed(tmp_path)
    train = tmp_path / "ali_ccp_train.csv"
    frame = pd.read_csv(train)
    frame.drop(columns=["D702"]).to_csv(train, index=False)
    with pytest.raises(ValueError, match=r"ali_ccp_train\.csv: no column 'D702'"):
        load_ali_ccp(str(tmp_path))
    bad = frame.astype({"127_14": object})
    bad.loc[0, "127_14"] = "1.5"
    bad.to_csv(train, index=False)
    with pytest.raises(ValueError, match=r"line 2, column '127_14': '1.5' is not an integer"):
        load_ali_ccp(str(tmp_path))

    raw = tmp_path / "raw"
    raw.mkdir()
    write_raw(raw, "train")
    write_raw(raw, "test")
    skeleton = raw / "sample_skeleton_train.csv"
    lines = skeleton.read_text().splitlines()
    lines[1] = lines[1].replace("\x03", "|", 1)
    skeleton.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"sample_skeleton_train\.csv, line 2, column "
                                         "'feature_list': item '205\\\\x0232\\|1.0'"):
        load_ali_ccp(str(raw))
    lines[1] = "2,1,1,bbbb,3"
    skeleton.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 2: 5 comma-separated fields, expected 6"):
        load_ali_ccp(str(raw))
    os.remove(raw / "common_features_test.csv")
    write_raw(raw, "train")
    with pytest.raises(FileNotFoundError, match="common_features_test.csv"):
        load_ali_ccp(str(raw))
    with pytest.raises(FileNotFoundError, match="No Ali-CCP files"):
        load_ali_ccp(str(tmp_path / "raw" / ".." / "raw"), layout="preprocessed")


def test_esmm_training_steps_on_the_loaded_data(tmp_path):
    write_preprocessed(tmp_path, rows=(400, 64, 64))
    data = load_ali_ccp(str(tmp_path), conversion="esmm")
    model = km.MultiTaskModel(features=data.features, tasks=data.tasks,
                              backbone=km.layers.SharedBottom(units=[8]), tower_units=[4])
    model.compile(optimizer="adam")
    history = model.fit(data.as_tf_dataset("train", batch_size=100), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
