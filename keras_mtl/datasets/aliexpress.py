"""AliExpress (Li et al., CIKM 2020): search impressions per country with click and conversion."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from keras_mtl.datasets.base import MultiTaskDataset, split_frame
from keras_mtl.datasets.reading import (
    CONVERSION_MODES,
    CONVERSION_SPACES,
    check_labels,
    check_max_rows,
    conversion_task,
    read_csv,
    validation_split,
)
from keras_mtl.features import FeatureSpec, IntegerId, Numeric
from keras_mtl.tasks import Task

COUNTRIES = ("NL", "ES", "FR", "US")
CATEGORICAL = [f"categorical_{i}" for i in range(1, 17)]
NUMERICAL = [f"numerical_{i}" for i in range(1, 64)]
LABELS = ["click", "conversion"]
# The column order of MTReclib's preprocessing (`data/preprocess.py`) and torch-rechub's samples.
COLUMNS = ["search_id", *CATEGORICAL, *NUMERICAL, *LABELS]
# Train/test file names: MTReclib's `AliExpress_<country>/{train,test}.csv`, torch-rechub's samples.
FILE_PAIRS = (("train.csv", "test.csv"),
              ("aliexpress_train.csv", "aliexpress_test.csv"),
              ("aliexpress_train_sample.csv", "aliexpress_test_sample.csv"))


def load_aliexpress(
    path: str,
    country: str = "NL",
    conversion: str = "click",
    max_rows: int | None = None,
    validation_fraction: float = 0.1,
    fractions=(0.8, 0.1, 0.1),
    embedding_dim: int = 8,
    seed: int = 0,
) -> MultiTaskDataset:
    """AliExpress search logs of one country, in the CSV layout MTReclib and torch-rechub use.

    Li et al., "Improving Multi-Scenario Learning to Rank in E-commerce by Exploiting Task
    Relationships in the Label Space", CIKM 2020; released on Tianchi (dataset 74690) behind a
    login, with no public URL or checksum to download from, so only local files are read.

    Layout: CSV with a header `search_id, categorical_1 … categorical_16, numerical_1 …
    numerical_63, click, conversion` — the output of MTReclib's `data/preprocess.py`
    (`AliExpress_NL/train.csv`, `test.csv`), and torch-rechub's `aliexpress_{train,test}_sample.csv`.

    Args:
        path: the country's folder (`AliExpress_NL/` with `train.csv` and `test.csv`), a folder
            holding `AliExpress_<country>/`, or one CSV file (then split at random by `fractions`).
        country: NL, ES, FR or US: picks `AliExpress_<country>/` when `path` holds several.
        conversion: how the conversion task is trained — `"click"` (default) on clicked rows
            only (`Task(sample_space="click")`), `"esmm"` over every impression as ESMM does
            (`esmm_parent="click"`), or `"impressions"` as a plain task over every impression (what
            MTReclib reports its conversion AUC on).
        max_rows: read at most this many rows of each file (the first ones), for quick runs.
        validation_fraction: the seeded share of the train file held out as validation; the test
            file stays whole as the test split.
        embedding_dim: width of every categorical field's embedding.

    Tasks: `click` (binary) and `conversion` (binary, see `conversion`). Features: the 16
    `categorical_*` fields as `IntegerId`s (the files hold integer codes; `num_ids` = the largest
    code in any split + 1) and the 63 `numerical_*` columns as `Numeric` (standardised with the
    train split's statistics). `search_id` stays in the frames (a request id, e.g. for GAUC or a
    ranking `group`) but is not a feature, as in MTReclib.
    """
    check_max_rows(max_rows)
    country = country.upper()
    if country not in COUNTRIES:
        raise ValueError(f"country must be one of {COUNTRIES}, got {country!r}.")
    if conversion not in CONVERSION_MODES:
        raise ValueError(f"conversion must be one of {CONVERSION_MODES}, got {conversion!r}.")
    if os.path.isfile(path):
        frame = read_aliexpress_file(path, max_rows)
        train, validation, test = split_frame(frame, fractions, seed)
        how = f"{os.path.basename(path)} split at random {tuple(fractions)}"
    else:
        train_file, test_file = _files(path, country)
        train, validation = validation_split(read_aliexpress_file(train_file, max_rows),
                                             validation_fraction, seed)
        test = read_aliexpress_file(test_file, max_rows)
        how = (f"{train_file} ({validation_fraction:.0%} held out as validation) and {test_file}")
    num_ids = {c: int(max(s[c].max() if len(s) else 0 for s in (train, validation, test))) + 1
               for c in CATEGORICAL}
    spec = FeatureSpec(
        [IntegerId(c, num_ids=num_ids[c], embedding_dim=embedding_dim) for c in CATEGORICAL]
        + [Numeric(c) for c in NUMERICAL]
    ).adapt(train)
    return MultiTaskDataset(
        name=f"aliexpress-{country.lower()}", train=train, validation=validation, test=test,
        features=spec, tasks=[Task("click"), conversion_task("conversion", "click", conversion)],
        description=(f"AliExpress {country}: {how}; conversion trained on "
                     f"{CONVERSION_SPACES[conversion]}"
                     f"{f', first {max_rows} rows per file' if max_rows else ''}, seed={seed}"),
    )


def read_aliexpress_file(path: str, max_rows: int | None = None) -> pd.DataFrame:
    """One AliExpress CSV (see `load_aliexpress`), checked: columns, numbers, 0/1 labels."""
    frame = read_csv(path, COLUMNS, integer=["search_id", *CATEGORICAL, *LABELS],
                     floating=NUMERICAL, max_rows=max_rows)
    check_labels(frame, path, LABELS)
    for column in LABELS:
        frame[column] = frame[column].astype(np.float32)
    for column in CATEGORICAL:
        if len(frame) and frame[column].min() < 0:
            raise ValueError(f"{path}, column {column!r}: negative code {frame[column].min()} "
                             "(the fields are non-negative integer codes).")
    return frame


def _files(path: str, country: str) -> tuple[str, str]:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No AliExpress data at {path!r} (no such file or folder).")
    folders = [path, os.path.join(path, f"AliExpress_{country}"),
               os.path.join(path, "data", f"AliExpress_{country}")]
    for folder in folders:
        for train, test in FILE_PAIRS:
            if os.path.isfile(os.path.join(folder, train)):
                test_file = os.path.join(folder, test)
                if not os.path.isfile(test_file):
                    raise FileNotFoundError(f"{os.path.join(folder, train)} has no {test} beside it.")
                return os.path.join(folder, train), test_file
    raise FileNotFoundError(
        f"No AliExpress {country} files at {path!r}: looked for train.csv/test.csv in it and in "
        f"AliExpress_{country}/ (MTReclib's layout), and aliexpress_train[_sample].csv "
        "(torch-rechub's).")
