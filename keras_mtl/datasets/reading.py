"""What the file-based loaders share: finding a data set's files, reading a CSV in checked chunks
(errors name the file, the column and the line), and downloads that say what to do offline."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

# Rows read per pandas chunk: each chunk is checked, then cast down (int32 codes, float32 values).
CHUNK_ROWS = 500_000


class DownloadError(RuntimeError):
    """A data set could not be downloaded; the message says how to pass local files instead."""


def download(fname: str, url: str, file_hash: str | None, *, loader: str, flag: str = "--data-path",
             cache_dir: str | None = None) -> str:
    """`keras.utils.get_file` (cached, checksum-checked) whose failure says, in one line, what to
    do without the internet, instead of urllib's traceback.

    Raises:
        DownloadError: naming the URL, the original error, and `path=` / the CLI flag.
    """
    import keras

    try:
        return keras.utils.get_file(fname, url, file_hash=file_hash, cache_dir=cache_dir,
                                    cache_subdir="datasets/keras_mtl")
    except Exception as error:  # urllib, HTTP, SSL and checksum errors all end up here
        reason = " ".join(str(error).split())[:300]
        raise DownloadError(
            f"Could not download {fname} from {url} ({type(error).__name__}: {reason}). "
            f"Offline? pass path=... to {loader}(), the local file or its folder "
            f"(or {flag} ... to keras-mtl).") from None


def find_file(path: str, names: Sequence[str], what: str) -> str:
    """The first of `names` in the folder `path`, in `path/data/`, or `path` itself if it is a
    file; a `FileNotFoundError` naming what was looked for otherwise."""
    if os.path.isfile(path):
        return path
    for folder in (path, os.path.join(path, "data")):
        for name in names:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate
    raise FileNotFoundError(f"No {what} at {path!r}: looked for {', '.join(names)} (in the folder "
                            "and in its data/ subfolder).")


def header(path: str) -> list[str]:
    """A CSV file's column names (its first line)."""
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read a CSV header ({error}).") from None


def read_csv(path: str, columns: Sequence[str], *, integer: Sequence[str] = (),
             floating: Sequence[str] = (), text: Sequence[str] = (), max_rows: int | None = None,
             chunk_rows: int = CHUNK_ROWS, keep=None) -> pd.DataFrame:
    """The `columns` of a CSV file with a header, read in chunks of `chunk_rows` rows and stopped
    after `max_rows`: `integer` columns as int64 codes, `floating` ones as float32, `text` ones as
    strings (every other listed column as pandas reads it). `keep(chunk)`, if given, returns the
    boolean mask of a checked chunk's rows to keep (e.g. the videos a log names).

    Raises:
        ValueError: naming the file and the missing columns, or the file, column, line number and
            value of the first cell that is not a number (an integer column takes whole numbers
            only; an empty cell counts as 0 in an integer column and as missing in a float one).
    """
    present = header(path)
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(map(repr, missing))} "
                         f"(the file has {len(present)} columns: {present[:12]}"
                         f"{' ...' if len(present) > 12 else ''}).")
    frames, rows = [], 0
    dtype = {c: str for c in (*integer, *floating, *text)}
    reader = pd.read_csv(path, usecols=list(columns), dtype=dtype, keep_default_na=False,
                         chunksize=chunk_rows, nrows=max_rows)
    for chunk in reader:
        first_line = rows + 2  # 1-based line numbers, after the header
        for name in integer:
            chunk[name] = _numbers(chunk[name], path, name, first_line, whole=True)
        for name in floating:
            chunk[name] = _numbers(chunk[name], path, name, first_line, whole=False)
        rows += len(chunk)
        frames.append(chunk if keep is None else chunk[np.asarray(keep(chunk), bool)])
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=np.float32) for c in columns})
    return pd.concat(frames, ignore_index=True)[list(columns)]


def _numbers(cells: pd.Series, path: str, column: str, first_line: int, whole: bool) -> np.ndarray:
    text = cells.str.strip()
    empty = text == ""
    values = pd.to_numeric(text.where(~empty, "0" if whole else "nan"), errors="coerce")
    bad = (values.isna() | (values % 1 != 0)) if whole else (values.isna() & ~empty)
    if bool(bad.any()):
        where = int(np.flatnonzero(bad.to_numpy())[0])
        kind = "an integer code" if whole else "a number"
        raise ValueError(f"{path}, line {first_line + where}, column {column!r}: "
                         f"{cells.iloc[where]!r} is not {kind}.")
    return values.to_numpy(np.int64 if whole else np.float32)


def check_labels(frame: pd.DataFrame, path: str, labels) -> None:
    """0/1 labels only; the error names the file, the column and the line of the first other."""
    for column in labels:
        values = frame[column].to_numpy()
        bad = np.flatnonzero((values != 0) & (values != 1))
        if bad.size:
            raise ValueError(f"{path}, line {bad[0] + 2}, column {column!r}: label "
                             f"{values[bad[0]].item()!r} is not 0 or 1 ({bad.size} such rows).")


def validation_split(frame: pd.DataFrame, fraction: float, seed: int):
    """A seeded random `fraction` of `frame`'s rows as validation, the rest as train (both in file
    order), for data sets released as train and test files only."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must lie strictly between 0 and 1, got {fraction}.")
    order = np.random.default_rng(seed).permutation(len(frame))
    size = int(round(fraction * len(frame)))
    validation, train = np.sort(order[:size]), np.sort(order[size:])
    return (frame.iloc[train].reset_index(drop=True),
            frame.iloc[validation].reset_index(drop=True))


def check_max_rows(max_rows: int | None) -> None:
    if max_rows is not None and (not isinstance(max_rows, int | np.integer) or max_rows < 1):
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}.")


# How a conditional task (a conversion after a click) is trained: `conversion=` of the loaders.
CONVERSION_MODES = ("click", "esmm", "impressions")
CONVERSION_SPACES = {"click": "clicked rows", "esmm": "every impression (ESMM)",
                     "impressions": "every impression"}


def conversion_task(name: str, parent: str, mode: str):
    """The `Task` of a label observed after `parent` (a purchase after a click): `"click"` trains it
    on the parent's positive rows (`sample_space`), `"esmm"` over every impression the ESMM way
    (`esmm_parent`), `"impressions"` as a plain binary task over every row (what MTReclib and
    torch-rechub report their conversion AUC on)."""
    from keras_mtl.tasks import Task

    if mode == "click":
        return Task(name, sample_space=parent)
    if mode == "esmm":
        return Task(name, esmm_parent=parent)
    if mode == "impressions":
        return Task(name)
    raise ValueError(f"conversion must be one of {CONVERSION_MODES}, got {mode!r}.")
