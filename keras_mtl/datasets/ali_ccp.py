"""Ali-CCP (Alibaba Click and Conversion Prediction; Ma et al., ESMM, SIGIR 2018): impressions
with a click and, after it, a purchase — from torch-rechub's preprocessed CSVs or Tianchi's raw
skeleton and common-features files."""

from __future__ import annotations

import os
from collections.abc import Iterator

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
from keras_mtl.features import Categorical, FeatureSpec, IntegerId, Numeric
from keras_mtl.tasks import Task

# The feature fields torch-rechub's `preprocess_ali_ccp.py` keeps (ESMM's Table 1 fields: user
# profile 101-129, item 205-216, combinations 508-853, context 301, behaviour 109_14-150_14) and the
# fields whose value (after `\x03`) it also keeps as a dense column `D<field>`.
SPARSE = ["101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206", "207",
          "210", "216", "508", "509", "702", "853", "301", "109_14", "110_14", "127_14", "150_14"]
DENSE_FIELDS = ["109_14", "110_14", "127_14", "150_14", "508", "509", "702", "853"]
DENSE = [f"D{f}" for f in DENSE_FIELDS]
LABELS = ["click", "purchase"]
COLUMNS = [*LABELS, *SPARSE, *DENSE]
LAYOUTS = ("auto", "preprocessed", "raw")
# torch-rechub's file names (the `_sample` ones ship with its examples).
PREPROCESSED = {split: (f"ali_ccp_{name}.csv", f"ali_ccp_{name}_sample.csv")
                for split, name in (("train", "train"), ("validation", "val"), ("test", "test"))}
RAW = {"train": "sample_skeleton_train.csv", "test": "sample_skeleton_test.csv"}


def load_ali_ccp(
    path: str,
    conversion: str = "click",
    layout: str = "auto",
    max_rows: int | None = None,
    validation_fraction: float = 0.1,
    fractions=(0.8, 0.1, 0.1),
    embedding_dim: int = 8,
    min_count: int = 10,
    max_vocabulary: int | None = None,
    seed: int = 0,
) -> MultiTaskDataset:
    """Ali-CCP, ESMM's data set: click → purchase over Taobao impressions.

    Released on Tianchi (dataset 408) behind a login, with no public URL or checksum to download
    from, so only local files are read. Two layouts (`layout="auto"` tells them apart by name):

    - **preprocessed** (torch-rechub's `preprocess_ali_ccp.py`, also used by MTReclib-style code):
      `ali_ccp_train.csv`, `ali_ccp_val.csv`, `ali_ccp_test.csv` (or the `_sample` ones), each with
      the header `click,purchase,101,121,…,150_14,D109_14,…,D853`: 23 fields as integer codes
      (0: rare or absent) and 8 dense values. Codes become `IntegerId`s (`num_ids` = largest code
      in any split + 1; no lookup table, so the step compiles with XLA).
    - **raw** (Tianchi's release): `sample_skeleton_{train,test}.csv` with lines
      `sample_id,click,conversion,md5,num_features,feature_list` and `common_features_{train,test}.csv`
      with `md5,num_features,feature_list`; a feature list is `field\\x02feature_id\\x03value`
      items joined by `\\x01`, and a sample's features are its own plus those of its md5 line in
      the common file (which win where both list a field, as in torch-rechub). Read in one
      streaming pass over each file (only the common lines the read samples name are kept). As
      torch-rechub does, each of the 23 fields takes the last `feature_id` listed for it (0 when
      absent) and each of the 8 dense fields its value; ids are Tianchi's global feature ids, so
      they become `Categorical`s with a vocabulary from the train split
      (ids seen fewer than `min_count` times share the OOV row; torch-rechub's cut-off is 10).

    Both layouts drop rows with a purchase but no click (inconsistent; torch-rechub drops them).

    Args:
        path: the folder holding either layout (or its `data/` subfolder), or one file — a
            preprocessed CSV, or a `sample_skeleton_*.csv` with its `common_features_*.csv` beside
            it — which is then split at random by `fractions`.
        conversion: how `purchase` is trained — `"click"` (default) on clicked rows only
            (`Task(sample_space="click")`), `"esmm"` over every impression (`esmm_parent="click"`),
            or `"impressions"` as a plain task over every impression.
        layout: `"auto"`, `"preprocessed"` or `"raw"`.
        max_rows: read at most this many rows (samples) of each file, the first ones.
        validation_fraction: with the raw layout (train and test files only) or without
            `ali_ccp_val.csv`: the seeded share of the train file held out as validation.
        min_count, max_vocabulary: the raw layout's vocabularies (see above).
        embedding_dim: width of every field's embedding.

    Tasks: `click` (binary) and `purchase` (binary, see `conversion`). Features: the 23 fields and
    the 8 dense columns (`Numeric`, standardised with the train split's statistics).
    """
    check_max_rows(max_rows)
    if conversion not in CONVERSION_MODES:
        raise ValueError(f"conversion must be one of {CONVERSION_MODES}, got {conversion!r}.")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No Ali-CCP data at {path!r} (no such file or folder).")
    layout, files = _files(path, layout)
    read = read_raw if layout == "raw" else read_preprocessed
    dropped = 0

    def load(file):
        nonlocal dropped
        frame = read(file, max_rows)
        inconsistent = (frame["purchase"] == 1) & (frame["click"] == 0)
        dropped += int(inconsistent.sum())
        return frame[~inconsistent].reset_index(drop=True)

    if "single" in files:
        train, validation, test = split_frame(load(files["single"]), fractions, seed)
        how = f"{files['single']} split at random {tuple(fractions)}"
    else:
        train = load(files["train"])
        if files.get("validation"):
            validation = load(files["validation"])
            how = f"{files['train']}, {files['validation']}, {files['test']}"
        else:
            train, validation = validation_split(train, validation_fraction, seed)
            how = (f"{files['train']} ({validation_fraction:.0%} held out as validation) and "
                   f"{files['test']}")
        test = load(files["test"])
    if layout == "raw":
        sparse = [Categorical(c, embedding_dim=embedding_dim, min_count=min_count) for c in SPARSE]
    else:
        sparse = [IntegerId(c, num_ids=int(max(s[c].max() if len(s) else 0
                                                for s in (train, validation, test))) + 1,
                            embedding_dim=embedding_dim) for c in SPARSE]
    spec = FeatureSpec(sparse + [Numeric(c) for c in DENSE]).adapt(
        train, max_vocabulary=max_vocabulary)
    return MultiTaskDataset(
        name="ali-ccp", train=train, validation=validation, test=test, features=spec,
        tasks=[Task("click"), conversion_task("purchase", "click", conversion)],
        description=(f"Ali-CCP ({layout} layout): {how}; purchase trained on "
                     f"{CONVERSION_SPACES[conversion]}"
                     f"{f', first {max_rows} rows per file' if max_rows else ''}"
                     f"{f', {dropped} purchase-without-click rows dropped' if dropped else ''}, "
                     f"seed={seed}"),
    )


def read_preprocessed(path: str, max_rows: int | None = None) -> pd.DataFrame:
    """One preprocessed Ali-CCP CSV (torch-rechub's layout), checked: columns, codes, labels."""
    frame = read_csv(path, COLUMNS, integer=[*LABELS, *SPARSE], floating=DENSE, max_rows=max_rows)
    check_labels(frame, path, LABELS)
    for column in LABELS:
        frame[column] = frame[column].astype(np.float32)
    return frame


def read_raw(skeleton: str, max_rows: int | None = None) -> pd.DataFrame:
    """One raw Tianchi skeleton file joined with the common-features file beside it (its name with
    `sample_skeleton` replaced by `common_features`), in the preprocessed layout's columns."""
    folder, name = os.path.split(skeleton)
    common = os.path.join(folder, name.replace("sample_skeleton", "common_features", 1))
    if common == skeleton or not os.path.isfile(common):
        raise FileNotFoundError(f"{skeleton} needs its common-features file beside it: no {common}.")
    labels: dict[str, list] = {"click": [], "purchase": []}
    columns: dict[str, list] = {c: [] for c in (*SPARSE, *DENSE)}
    md5s: list[str] = []
    for line, fields in _lines(skeleton, 6, "sample_id,click,conversion,md5,num_features,"
                                            "feature_list", max_rows):
        for label, text in zip(LABELS, fields[1:3], strict=True):
            if text not in ("0", "1"):
                column = "click" if label == "click" else "conversion"
                raise ValueError(f"{skeleton}, line {line}, column {column!r}: label {text!r} is "
                                 "not 0 or 1.")
            labels[label].append(float(text))
        md5s.append(fields[3])
        _append(columns, parse_feature_list(fields[5], skeleton, line))
    wanted = set(md5s)
    shared: dict[str, dict] = {}
    for line, fields in _lines(common, 3, "md5,num_features,feature_list"):
        if fields[0] in wanted:
            shared[fields[0]] = parse_feature_list(fields[2], common, line)
    absent = wanted - shared.keys()
    if absent:
        raise ValueError(f"{skeleton}: {len(absent)} md5 common-feature index(es) not in {common} "
                         f"(e.g. {sorted(absent)[0]!r}). Are the two files from the same split?")
    # The common features are laid over the sample's own, as torch-rechub's `dict.update` does
    # (the two lists hold different fields: user ones in the common file, item ones per sample).
    for row, md5 in enumerate(md5s):
        for column, value in shared[md5].items():
            columns[column][row] = value
    frame = pd.DataFrame({
        **{c: np.asarray(v, np.float32) for c, v in labels.items()},
        **{c: np.asarray([0 if x is None else x for x in columns[c]], np.int64) for c in SPARSE},
        **{c: np.asarray([0.0 if x is None else x for x in columns[c]], np.float32)
           for c in DENSE},
    })
    return frame


def parse_feature_list(text: str, path: str, line: int) -> dict:
    """`field\\x02feature_id\\x03value` items joined by `\\x01` → `{field: id, "D<field>": value}`
    for the kept fields (the last item of a field wins)."""
    parsed: dict = {}
    if not text:
        return parsed
    for item in text.split("\x01"):
        field, _, rest = item.partition("\x02")
        feature, _, value = rest.partition("\x03")
        if field in _SPARSE_SET or field in _DENSE_SET:
            try:
                if field in _SPARSE_SET:
                    parsed[field] = int(feature)
                if field in _DENSE_SET:
                    parsed[f"D{field}"] = float(value)
            except ValueError:
                raise ValueError(
                    f"{path}, line {line}, column 'feature_list': item {item!r} is not "
                    "field\\x02feature_id\\x03value (an integer id and a number).") from None
    return parsed


_SPARSE_SET = frozenset(SPARSE)
_DENSE_SET = frozenset(DENSE_FIELDS)


def _append(columns: dict[str, list], parsed: dict) -> None:
    for column, values in columns.items():
        values.append(parsed.get(column))


def _lines(path: str, count: int, layout: str, max_rows: int | None = None
           ) -> Iterator[tuple[int, list[str]]]:
    """(line number, its `count` comma-separated fields) for each line of a raw file, streamed."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if max_rows is not None and number > max_rows:
                return
            text = text.rstrip("\r\n")
            if not text:
                continue
            fields = text.split(",")
            if len(fields) != count:
                raise ValueError(f"{path}, line {number}: {len(fields)} comma-separated fields, "
                                 f"expected {count} ({layout}).")
            yield number, fields


def _files(path: str, layout: str) -> tuple[str, dict[str, str | None]]:
    if os.path.isfile(path):
        raw = os.path.basename(path).startswith("sample_skeleton")
        if layout == "auto":
            layout = "raw" if raw else "preprocessed"
        return layout, {"single": path}
    for folder in (path, os.path.join(path, "data")):
        found = {split: next((os.path.join(folder, n) for n in names
                              if os.path.isfile(os.path.join(folder, n))), None)
                 for split, names in PREPROCESSED.items()}
        if layout in ("auto", "preprocessed") and found["train"]:
            if not found["test"]:
                raise FileNotFoundError(f"{found['train']} has no ali_ccp_test.csv beside it.")
            return "preprocessed", found
        raw = {split: os.path.join(folder, n) for split, n in RAW.items()}
        if layout in ("auto", "raw") and os.path.isfile(raw["train"]):
            if not os.path.isfile(raw["test"]):
                raise FileNotFoundError(f"{raw['train']} has no {RAW['test']} beside it.")
            return "raw", {"train": raw["train"], "validation": None, "test": raw["test"]}
    raise FileNotFoundError(
        f"No Ali-CCP files at {path!r}: looked for ali_ccp_{{train,val,test}}.csv (torch-rechub's "
        "preprocessed layout) and sample_skeleton_{train,test}.csv with common_features_"
        "{train,test}.csv (Tianchi's raw layout), in the folder and in its data/ subfolder.")
