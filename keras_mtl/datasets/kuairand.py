"""KuaiRand (Gao et al., CIKM 2022): Kuaishou video impressions with a dozen feedback signals."""

from __future__ import annotations

import glob
import os
import re

import numpy as np
import pandas as pd

from keras_mtl.datasets.base import MultiTaskDataset, split_frame
from keras_mtl.datasets.reading import check_labels, check_max_rows, read_csv
from keras_mtl.features import Categorical, FeatureSpec, MultiValued, Numeric
from keras_mtl.tasks import Task

VARIANTS = ("pure", "1k", "27k")
# `log_*.csv`, in the order of the release's README.
LOG_COLUMNS = ["user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
               "is_follow", "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms",
               "duration_ms", "profile_stay_time", "comment_stay_time", "is_profile_enter",
               "is_rand", "tab"]
BINARY_SIGNALS = ("is_click", "long_view", "is_like", "is_follow", "is_comment", "is_forward",
                  "is_hate", "is_profile_enter")
TASKS = (*BINARY_SIGNALS, "watch_time")
DEFAULT_TASKS = ("is_click", "long_view", "is_like", "watch_time")
USER_TEXT = ["user_active_degree", "follow_user_num_range", "fans_user_num_range",
             "friend_user_num_range", "register_days_range"]
USER_CODES = ["is_lowactive_period", "is_live_streamer", "is_video_author",
              *[f"onehot_feat{i}" for i in range(18)]]
USER_COUNTS = ["follow_user_num", "fans_user_num", "friend_user_num", "register_days"]
VIDEO_TEXT = ["video_type", "upload_type"]
VIDEO_CODES = ["author_id", "visible_status", "music_type"]
TAG_LENGTH = 4


def load_kuairand(
    path: str,
    tasks=DEFAULT_TASKS,
    variant: str = "auto",
    include_random: bool = False,
    side_features: bool = True,
    split: str = "time",
    fractions=(0.8, 0.1, 0.1),
    max_rows: int | None = None,
    min_count: int = 2,
    max_vocabulary: int | None = None,
    seed: int = 0,
) -> MultiTaskDataset:
    """KuaiRand-Pure, -1K or -27K from its released CSV files, one row per video impression.

    Gao et al., "KuaiRand: An Unbiased Sequential Recommendation Dataset with Randomly Exposed
    Videos", CIKM 2022 (CC BY-SA 4.0). Distributed on request by e-mail, with no public URL or
    checksum to download from, so only local files are read.

    Layout (the release's `data/` folder): `log_standard_4_08_to_4_21_<v>.csv` and
    `log_standard_4_22_to_5_08_<v>.csv` (KuaiRand-27K: `..._27k_part1.csv`, `..._part2.csv`),
    `log_random_4_22_to_5_08_<v>.csv`, `user_features_<v>.csv`, `video_features_basic_<v>.csv`,
    `<v>` = `pure`, `1k` or `27k`. Log columns: `user_id, video_id, date, hourmin, time_ms,
    is_click, is_like, is_follow, is_comment, is_forward, is_hate, long_view, play_time_ms,
    duration_ms, profile_stay_time, comment_stay_time, is_profile_enter, is_rand, tab`.

    Args:
        path: the release's folder (`KuaiRand-Pure/`) or its `data/` folder.
        tasks: names among `is_click`, `long_view`, `is_like`, `is_follow`, `is_comment`,
            `is_forward`, `is_hate`, `is_profile_enter` (binary, over every impression) and
            `watch_time`: `play_time_ms` in seconds as a `watch_time` task (weighted logistic
            regression; `label_scale` = the train split's mean positive watch time, so its loss
            is on a click's scale). Every signal stays in the frames as a column either way.
        variant: `"pure"`, `"1k"`, `"27k"`, or `"auto"` (from the file names).
        include_random: also read `log_random_*` (the randomly exposed videos; `is_rand` = 1).
        side_features: join `user_features_*` and `video_features_basic_*` (only the rows of the
            videos the logs name are kept from the latter; KuaiRand-27K's is 2.6 GB).
        split: `"time"` (default): rows ordered by `time_ms`, the first `fractions[0]` for train,
            then validation, then test, so nothing is learnt from the future; `"random"`: a seeded
            random split.
        max_rows: read at most this many log rows in all (the files in date order, each from its
            start).
        min_count, max_vocabulary: vocabularies of the categorical features (from the train split).

    Features (never a post-impression signal): `user_id`, `video_id`, `tab`, `hour` (from
    `hourmin`), `weekday` (from `date`), `is_rand` (categorical) and `duration_ms` (numeric,
    `log1p`); with `side_features`, the user's activity degree, ranges, flags and 18 encrypted
    one-hot fields (categorical) and counts (numeric, `log1p`), the video's `author_id`, type,
    upload type, visibility and music type (categorical) and its first `TAG_LENGTH` tags
    (`MultiValued`, mean-pooled).
    """
    check_max_rows(max_rows)
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"KuaiRand tasks must be some of {list(TASKS)}, got {tasks!r}.")
    if split not in ("time", "random"):
        raise ValueError(f"split must be 'time' or 'random', got {split!r}.")
    folder, variant, logs = _files(path, variant, include_random)
    frames, remaining = [], max_rows
    for log in logs:
        frame = read_csv(log, LOG_COLUMNS, integer=LOG_COLUMNS, max_rows=remaining)
        check_labels(frame, log, BINARY_SIGNALS)
        frames.append(frame)
        if remaining is not None:
            remaining -= len(frame)
            if remaining <= 0:
                break
    frame = pd.concat(frames, ignore_index=True)
    for column in BINARY_SIGNALS:
        frame[column] = frame[column].astype(np.float32)
    frame["watch_time"] = (np.maximum(frame["play_time_ms"].to_numpy(), 0) / 1000.0
                           ).astype(np.float32)
    frame["hour"] = (frame["hourmin"] // 100).astype(np.int64)
    dates = pd.to_datetime(frame["date"].astype(str), format="%Y%m%d", errors="coerce")
    frame["weekday"] = dates.dt.weekday.fillna(-1).astype(np.int64)
    frame["duration_ms"] = frame["duration_ms"].astype(np.float32)
    features = [Categorical("user_id", embedding_dim=16), Categorical("video_id", embedding_dim=16),
                Categorical("tab", embedding_dim=4), Categorical("hour", embedding_dim=4),
                Categorical("weekday", embedding_dim=4), Categorical("is_rand", embedding_dim=2),
                Numeric("duration_ms", log1p=True)]
    if side_features:
        frame = _join_side_features(frame, folder, variant)
        features += ([Categorical(c, embedding_dim=4) for c in USER_TEXT + USER_CODES]
                     + [Numeric(c, log1p=True) for c in USER_COUNTS]
                     + [Categorical(c, embedding_dim=8 if c == "author_id" else 4)
                        for c in VIDEO_TEXT + VIDEO_CODES]
                     + [MultiValued("tag", max_length=TAG_LENGTH, embedding_dim=8)])
    train, validation, test = _split(frame, split, fractions, seed)
    spec = FeatureSpec(features).adapt(train, max_vocabulary=max_vocabulary, min_count=min_count)
    positive = train.loc[train["watch_time"] > 0, "watch_time"]
    scale = float(round(positive.mean(), 1)) if len(positive) and positive.mean() > 0 else 1.0
    task_list = [Task(name, kind="watch_time", label_scale=scale) if name == "watch_time"
                 else Task(name) for name in tasks]
    return MultiTaskDataset(
        name=f"kuairand-{variant}", train=train, validation=validation, test=test, features=spec,
        tasks=task_list,
        description=(f"KuaiRand-{variant.capitalize() if variant == 'pure' else variant.upper()}: "
                     f"{len(frame)} impressions of {', '.join(os.path.basename(f) for f in logs)}"
                     f"{' with user and video features' if side_features else ''}; "
                     f"{'time-ordered' if split == 'time' else 'random'} split {tuple(fractions)}"
                     f"{f', first {max_rows} rows' if max_rows else ''}, seed={seed}"),
    )


def _split(frame: pd.DataFrame, split: str, fractions, seed: int):
    if split == "random":
        return split_frame(frame, fractions, seed)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1):
        raise ValueError(f"fractions must be three numbers >= 0 summing to 1, got {fractions}.")
    ordered = frame.sort_values("time_ms", kind="stable").reset_index(drop=True)
    n_train = int(round(fractions[0] * len(ordered)))
    n_val = int(round(fractions[1] * len(ordered)))
    return (ordered.iloc[:n_train].reset_index(drop=True),
            ordered.iloc[n_train:n_train + n_val].reset_index(drop=True),
            ordered.iloc[n_train + n_val:].reset_index(drop=True))


def _join_side_features(frame: pd.DataFrame, folder: str, variant: str) -> pd.DataFrame:
    users_file = _side_file(folder, f"user_features_{variant}.csv")
    videos_file = _side_file(folder, f"video_features_basic_{variant}.csv")
    users = read_csv(users_file, ["user_id", *USER_TEXT, *USER_CODES, *USER_COUNTS],
                     integer=["user_id"], floating=USER_CODES + USER_COUNTS, text=USER_TEXT)
    for column in USER_CODES:  # codes, some missing: -1
        users[column] = np.nan_to_num(users[column].to_numpy(), nan=-1).astype(np.int64)
    twice = users.loc[users["user_id"].duplicated(), "user_id"]
    if len(twice):
        raise ValueError(f"{users_file}: user_id {twice.iloc[0]} is listed twice.")
    wanted = set(np.unique(frame["video_id"]).tolist())
    videos = read_csv(videos_file, ["video_id", *VIDEO_TEXT, *VIDEO_CODES, "tag"],
                      integer=["video_id"], floating=VIDEO_CODES, text=[*VIDEO_TEXT, "tag"],
                      keep=lambda chunk: chunk["video_id"].isin(wanted))
    for column in VIDEO_CODES:
        videos[column] = np.nan_to_num(videos[column].to_numpy(), nan=-1).astype(np.int64)
    videos["tag"] = [_tags(text, videos_file) for text in videos["tag"]]
    videos = videos.drop_duplicates("video_id")
    joined = frame.merge(users, on="user_id", how="left").merge(videos, on="video_id", how="left")
    for column in USER_TEXT + VIDEO_TEXT:
        joined[column] = joined[column].fillna("").astype(str)
    for column in USER_CODES + VIDEO_CODES:
        joined[column] = joined[column].fillna(-1).astype(np.int64)
    joined["tag"] = [t if isinstance(t, np.ndarray) else np.zeros(0, np.int64)
                     for t in joined["tag"]]
    return joined


def _tags(text: str, path: str) -> np.ndarray:
    """`"12,65"` → the first `TAG_LENGTH` tag ids; empty → no tag."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        return np.asarray([int(float(p)) for p in parts[:TAG_LENGTH]], np.int64)
    except ValueError:
        raise ValueError(f"{path}, column 'tag': {text!r} is not a comma-separated list of tag "
                         "ids.") from None


def _side_file(folder: str, name: str) -> str:
    file = os.path.join(folder, name)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"No {name} in {folder} (pass side_features=False to train on the "
                                "logs alone).")
    return file


def _files(path: str, variant: str, include_random: bool) -> tuple[str, str, list[str]]:
    if variant not in ("auto", *VARIANTS):
        raise ValueError(f"variant must be 'auto' or one of {VARIANTS}, got {variant!r}.")
    for folder in (path, os.path.join(path, "data")):
        if not os.path.isdir(folder):
            continue
        found = sorted(glob.glob(os.path.join(folder, "log_standard_*.csv")))
        variants = sorted({m.group(1) for f in found
                           if (m := re.search(r"_(pure|1k|27k)(?:_part\d+)?\.csv$", f))})
        if not variants:
            continue
        if variant == "auto":
            if len(variants) > 1:
                raise ValueError(f"{folder} holds logs of several KuaiRand versions {variants}: "
                                 "pass variant=.")
            chosen = variants[0]
        elif variant in variants:
            chosen = variant
        else:
            raise FileNotFoundError(f"No KuaiRand-{variant} logs in {folder} (found {variants}).")
        pattern = re.compile(rf"log_standard_\d+_\d+_to_\d+_\d+_{chosen}(?:_part\d+)?\.csv$")
        logs = [f for f in found if pattern.search(f)]
        if include_random:
            random = os.path.join(folder, f"log_random_4_22_to_5_08_{chosen}.csv")
            if not os.path.isfile(random):
                raise FileNotFoundError(f"include_random=True but there is no {random}.")
            logs.append(random)
        # Date order: the 4_08_to_4_21 logs before the 4_22_to_5_08 ones, parts in order.
        logs.sort(key=lambda f: (tuple(int(x) for x in re.findall(r"_(\d+)_(\d+)_to_",
                                                                   os.path.basename(f))[0]), f))
        return folder, chosen, logs
    raise FileNotFoundError(
        f"No KuaiRand logs at {path!r}: looked for log_standard_*_{{pure,1k,27k}}.csv in the "
        "folder and in its data/ subfolder.")
