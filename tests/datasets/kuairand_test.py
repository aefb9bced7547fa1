"""KuaiRand from small files written here in the release's exact layout."""

import os

import numpy as np
import pandas as pd
import pytest

import keras_mtl as km
from keras_mtl.datasets import load_kuairand
from keras_mtl.datasets.kuairand import LOG_COLUMNS, USER_CODES, USER_COUNTS, USER_TEXT


def log_frame(rows: int, date: int, seed: int, users=6, videos=8, rand=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hourmin = rng.integers(0, 24, rows) * 100 + rng.integers(0, 60, rows)
    frame = {
        "user_id": rng.integers(0, users, rows), "video_id": rng.integers(0, videos, rows),
        "date": np.full(rows, date), "hourmin": hourmin,
        "time_ms": 1_650_000_000_000 + (date % 100) * 86_400_000 + np.sort(
            rng.integers(0, 86_400_000, rows)),
    }
    click = (rng.uniform(size=rows) < 0.4).astype(int)
    for name in ("is_click", "is_like", "is_follow", "is_comment", "is_forward", "is_hate",
                 "long_view", "is_profile_enter"):
        frame[name] = click if name == "is_click" else click * (rng.uniform(size=rows) < 0.3)
    frame["duration_ms"] = rng.integers(5_000, 120_000, rows)
    frame["play_time_ms"] = click * rng.integers(1_000, 60_000, rows)
    frame["profile_stay_time"] = 0
    frame["comment_stay_time"] = 0
    frame["is_rand"] = rand
    frame["tab"] = rng.integers(0, 15, rows)
    return pd.DataFrame(frame)[LOG_COLUMNS]


def write_release(root, variant="pure", rows=(120, 80), parts=False):
    folder = os.path.join(root, f"KuaiRand-{variant}", "data")
    os.makedirs(folder)
    early = log_frame(rows[0], 20220410, 0)
    late = log_frame(rows[1], 20220425, 1)
    if parts:
        half = len(early) // 2
        early.iloc[:half].to_csv(f"{folder}/log_standard_4_08_to_4_21_{variant}_part1.csv",
                                 index=False)
        early.iloc[half:].to_csv(f"{folder}/log_standard_4_08_to_4_21_{variant}_part2.csv",
                                 index=False)
    else:
        early.to_csv(f"{folder}/log_standard_4_08_to_4_21_{variant}.csv", index=False)
    late.to_csv(f"{folder}/log_standard_4_22_to_5_08_{variant}.csv", index=False)
    log_frame(30, 20220430, 2, rand=1).to_csv(f"{folder}/log_random_4_22_to_5_08_{variant}.csv",
                                              index=False)
    users = {"user_id": range(6),
             "user_active_degree": ["high_active", "full_active", "middle_active", "UNKNOWN",
                                    "full_active", "high_active"],
             "is_lowactive_period": [0, 0, 1, 0, 0, 0], "is_live_streamer": [0] * 6,
             "is_video_author": [1, 0, 1, 0, 0, 1], "follow_user_num": [5, 0, 40, 3, 200, 8],
             "follow_user_num_range": ["(0,10]", "0", "(10,50]", "(0,10]", "(150,250]", "(0,10]"],
             "fans_user_num": [312, 0, 5, 1, 9, 2000],
             "fans_user_num_range": ["[100,1k)", "0", "[1,10)", "[1,10)", "[1,10)", "[1k,5k)"],
             "friend_user_num": [0, 1, 2, 3, 4, 5],
             "friend_user_num_range": ["0", "[1,5)", "[1,5)", "[1,5)", "[1,5)", "[5,30)"],
             "register_days": [3624, 20, 100, 400, 800, 50],
             "register_days_range": ["730+", "15-30", "91-180", "366-730", "730+", "31-60"]}
    for i in range(18):
        users[f"onehot_feat{i}"] = [(u * (i + 1)) % 3 for u in range(6)]
    users["onehot_feat5"] = [0, 1, None, 2, 1, 0]
    pd.DataFrame(users).to_csv(f"{folder}/user_features_{variant}.csv", index=False)
    videos = pd.DataFrame({
        "video_id": range(9), "author_id": [441, 442, 441, 7, 8, 9, 441, 7, 5],
        "video_type": ["NORMAL"] * 8 + ["AD"], "upload_dt": ["2020-07-08"] * 9,
        "upload_type": ["ShortImport", "LongImport"] * 4 + ["Web"], "visible_status": [1] * 9,
        "video_duration": [17200.0] * 9, "server_width": [720] * 9, "server_height": [1280] * 9,
        "music_id": [989206467] * 9, "music_type": [4, 4, 9, None, 4, 9, 4, 4, 9],
        "tag": ["12,65", "12", "", "3,4,5,6,7", "65", "12,3", "4", "", "9"],
    })
    videos.to_csv(f"{folder}/video_features_basic_{variant}.csv", index=False)
    return os.path.join(root, f"KuaiRand-{variant}")


def test_tasks_features_and_a_time_split(tmp_path):
    data = load_kuairand(write_release(tmp_path))
    assert data.name == "kuairand-pure"
    assert (len(data.train), len(data.validation), len(data.test)) == (160, 20, 20)
    assert data.train["time_ms"].max() <= data.validation["time_ms"].min()
    assert data.validation["time_ms"].max() <= data.test["time_ms"].min()
    assert [t.name for t in data.tasks] == ["is_click", "long_view", "is_like", "watch_time"]
    assert {t.kind for t in data.tasks[:3]} == {"binary"} and data.tasks[3].kind == "watch_time"
    assert all(t.sample_space is None for t in data.tasks)
    positive = data.train.loc[data.train["watch_time"] > 0, "watch_time"]
    assert data.tasks[3].label_scale == pytest.approx(round(positive.mean(), 1))
    np.testing.assert_allclose(data.train["watch_time"], data.train["play_time_ms"] / 1000,
                               rtol=1e-6)
    kinds = {f.name: type(f).__name__ for f in data.features}
    assert kinds["user_id"] == kinds["video_id"] == kinds["tab"] == kinds["hour"] == "Categorical"
    assert kinds["duration_ms"] == "Numeric" and data.features["duration_ms"].log1p
    assert all(kinds[c] == "Categorical" for c in USER_TEXT + USER_CODES)
    assert all(kinds[c] == "Numeric" for c in USER_COUNTS)
    assert kinds["author_id"] == "Categorical" and kinds["tag"] == "MultiValued"
    # Post-impression signals are labels or left out, never features.
    for column in ("is_click", "play_time_ms", "profile_stay_time", "comment_stay_time",
                   "watch_time", "long_view"):
        assert column not in kinds
    row = data.train.iloc[0]
    assert row["hour"] == row["hourmin"] // 100
    tags = data.train.loc[data.train["video_id"] == 3, "tag"]
    assert len(tags) == 0 or list(tags.iloc[0]) == [3, 4, 5, 6]


def test_options_random_logs_parts_and_max_rows(tmp_path):
    root = write_release(tmp_path, variant="27k", parts=True)
    data = load_kuairand(root, tasks=["is_like", "is_follow"], include_random=True,
                         side_features=False, split="random", max_rows=150)
    assert data.name == "kuairand-27k"
    assert len(data.train) + len(data.validation) + len(data.test) == 150
    assert [t.name for t in data.tasks] == ["is_like", "is_follow"]
    assert "user_active_degree" not in data.features.names
    everything = load_kuairand(os.path.join(root, "data"), include_random=True, side_features=False)
    rows = pd.concat([everything.train, everything.validation, everything.test])
    assert len(rows) == 230 and rows["is_rand"].sum() == 30
    with pytest.raises(ValueError, match="KuaiRand tasks must be some of"):
        load_kuairand(root, tasks=["play_time_ms"])


def test_malformed_files_name_the_file_column_and_line(tmp_path):
    root = write_release(tmp_path)
    log = os.path.join(root, "data", "log_standard_4_22_to_5_08_pure.csv")
    frame = pd.read_csv(log)
    frame.drop(columns=["tab"]).to_csv(log, index=False)
    with pytest.raises(ValueError, match=r"log_standard_4_22_to_5_08_pure\.csv: no column 'tab'"):
        load_kuairand(root)
    frame.loc[6, "long_view"] = 3
    frame.to_csv(log, index=False)
    with pytest.raises(ValueError, match=r"line 8, column 'long_view': label 3 is not 0 or 1"):
        load_kuairand(root)
    frame.loc[6, "long_view"] = 1
    frame.to_csv(log, index=False)
    os.remove(os.path.join(root, "data", "user_features_pure.csv"))
    with pytest.raises(FileNotFoundError, match="No user_features_pure.csv .*side_features=False"):
        load_kuairand(root)
    with pytest.raises(FileNotFoundError, match="No KuaiRand logs"):
        load_kuairand(str(tmp_path))


def test_a_few_training_steps_with_watch_time(tmp_path):
    data = load_kuairand(write_release(tmp_path, rows=(300, 100)))
    model = km.MultiTaskModel(features=data.features, tasks=data.tasks,
                              backbone=km.layers.MMoE(num_experts=2, expert_units=[8]),
                              tower_units=[4])
    model.compile(optimizer="adam")
    history = model.fit(data.as_tf_dataset("train", batch_size=64), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(history.history["watch_time_loss"][0])
