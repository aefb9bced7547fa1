"""MovieLens ratings as a two-task ranking problem: from GroupLens' files on disk, or through
TensorFlow Datasets; optionally with each rating's user history."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pandas as pd

from keras_mtl.datasets.base import MultiTaskDataset, split_frame
from keras_mtl.datasets.reading import DownloadError
from keras_mtl.features import PADDING, Categorical, FeatureSpec, IntegerId, Numeric, Sequence
from keras_mtl.tasks import Task

VARIANTS = ("100k", "1m")
GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "Unknown", "War", "Western", "(no genres listed)",
)


def load_movielens(
    variant: str = "100k",
    data_dir: str | None = None,
    download: bool = True,
    like_threshold: float = 4.0,
    fractions=(0.8, 0.1, 0.1),
    seed: int = 0,
    path: str | None = None,
    history: int = 0,
) -> MultiTaskDataset:
    """MovieLens 100K or 1M: predict the rating and whether the user liked it.

    Harper & Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 2015 (GroupLens
    licence: research use, no redistribution). `path`: GroupLens' files on disk — the folder
    holding `u.data`, `u.user`, `u.item` (100K) or `ratings.dat`, `users.dat`, `movies.dat` (1M), a
    folder above it (`ml-100k/`, `ml-1m/`), or GroupLens' zip (`ml-100k.zip`, `ml-1m.zip`)
    unopened. Without `path`, TensorFlow Datasets downloads `movielens/{variant}-ratings` into
    `data_dir` (which needs the internet; `download=False` reads what it fetched before).

    Tasks: `rating` (regression on the 1-5 stars) and `liked` (binary: rating ≥ `like_threshold`).
    Features: `user_id`, `movie_id` (categorical, vocabularies from the training split),
    `user_gender`, `user_age` (the data's age bucket; 100K's ages are put in 1M's buckets),
    `user_occupation`, `user_zip_region` (first digit of the zip code), `movie_genre` (the first
    listed genre), `hour` and `weekday` of the rating (UTC), `movie_year` (from the title, 0 when
    absent). Rows are split at random with `seed` into `fractions`.

    `history=N` adds `movie_history`: the movies the user rated before this rating, most recent
    first, at most N (a `Sequence` that shares `movie_id`'s table and is pooled by DIN attention
    against the candidate movie; `movie_id` is then an `IntegerId` over GroupLens' movie ids).
    Only earlier ratings' movies enter it (ties in time broken by the file's order), never their
    stars, so it holds no label of its own row.
    """
    if variant not in VARIANTS:
        raise ValueError(f"MovieLens variant must be one of {VARIANTS} (the ones with user "
                         f"demographics), got {variant!r}.")
    if path is not None:
        columns = grouplens_columns(variant, path)
        source = f"GroupLens files at {path}"
    else:
        columns = _tfds_columns(variant, data_dir, download)
        source = "TFDS"
    frame = ratings_frame(columns, like_threshold)
    if history:
        frame["movie_history"] = history_column(frame["user_id"], frame["movie_id"],
                                                columns["timestamp"], int(history))
    train, validation, test = split_frame(frame, fractions, seed)
    categorical = ["user_id", "movie_id", "user_gender", "user_age", "user_occupation",
                   "user_zip_region", "movie_genre", "hour", "weekday"]
    features = [Categorical(name, embedding_dim=16 if name.endswith("_id") else 4)
                for name in categorical] + [Numeric("movie_year")]
    if history:
        for split in (train, validation, test):
            split["movie_id"] = split["movie_id"].astype(np.int64)
        num_ids = int(frame["movie_id"].astype(np.int64).max()) + 1
        features[1] = IntegerId("movie_id", num_ids=num_ids, embedding_dim=16)
        features.insert(2, Sequence("movie_history", max_length=int(history),
                                    shares_embedding_with="movie_id", pooling="attention",
                                    query="movie_id"))
    with_history = f", history of {history}" if history else ""
    return MultiTaskDataset(
        name=f"movielens-{variant}", train=train, validation=validation, test=test,
        features=FeatureSpec(features).adapt(train),
        tasks=[Task("rating", kind="regression"), Task("liked")],
        description=f"MovieLens {variant} ratings ({source}), liked = rating ≥ {like_threshold}, "
                    f"random split {fractions}, seed={seed}{with_history}",
    )


def _tfds_columns(variant: str, data_dir: str | None, download: bool) -> dict:
    try:
        import tensorflow_datasets as tfds  # its import can fail too (importlib_resources)

        dataset = tfds.load(f"movielens/{variant}-ratings", split="train", data_dir=data_dir,
                            download=download)
    except Exception as error:  # TFDS raises connection, download and missing-module errors
        reason = " ".join(str(error).split())[:300]
        raise DownloadError(
            f"MovieLens {variant} could not be loaded through TensorFlow Datasets "
            f"({type(error).__name__}: {reason}). Offline? pass path=... to load_movielens(), the "
            f"folder (or zip) of GroupLens' files, e.g. load_movielens({variant!r}, "
            f"path='ml-{variant}/') (or --movielens-path ... to keras-mtl bench --quality)."
        ) from None
    columns: dict[str, list] = {}
    for batch in tfds.as_numpy(dataset.map(_first_genre).batch(65_536)):
        for key, values in batch.items():
            if key == "movie_genres":
                values = [GENRES[v] for v in values]
            columns.setdefault(key, []).extend(list(values))
    return columns


# GroupLens' files per variant: ratings, users, movies; field separator; ML-1M's occupation codes.
_FILES = {"100k": ("u.data", "u.user", "u.item"), "1m": ("ratings.dat", "users.dat", "movies.dat")}
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
# u.item's 19 genre flags, in file order ("Children's" named as TFDS names it).
GENRES_100K = (
    "Unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
# ML-1M's age buckets (lower bounds), which TFDS also uses for 100K's raw ages.
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)


def grouplens_columns(variant: str, path: str) -> dict:
    """TFDS-named columns (see `ratings_frame`) read from GroupLens' own files."""
    ratings_name, users_name, movies_name = _FILES[variant]
    read = _file_reader(path, ratings_name)

    def table(name: str, sep: str, names: list[str]) -> pd.DataFrame:
        # GroupLens' files are Latin-1; ML-1M's "::" needs the Python parser.
        return pd.read_csv(io.StringIO(read(name).decode("latin-1")), sep=sep, header=None,
                           names=names, engine="python" if len(sep) > 1 else "c",
                           dtype=str, keep_default_na=False)

    if variant == "100k":
        ratings = table(ratings_name, "\t", ["user", "movie", "rating", "timestamp"])
        users = table(users_name, "|", ["user", "age", "gender", "occupation", "zip"])
        movies = table(movies_name, "|", ["movie", "title", "released", "video", "url",
                                          *GENRES_100K])
        flags = movies[list(GENRES_100K)].to_numpy() == "1"
        movies["genre"] = [GENRES_100K[int(np.argmax(row))] if row.any() else "Unknown"
                           for row in flags]
        ages = pd.to_numeric(users["age"], errors="coerce").fillna(0).to_numpy()
        users["age"] = [float(AGE_BUCKETS[max(0, np.searchsorted(AGE_BUCKETS, a, "right") - 1)])
                        for a in ages]
    else:
        ratings = table(ratings_name, "::", ["user", "movie", "rating", "timestamp"])
        users = table(users_name, "::", ["user", "gender", "age", "occupation", "zip"])
        movies = table(movies_name, "::", ["movie", "title", "genres"])
        movies["genre"] = [g.split("|")[0] if g else "Unknown" for g in movies["genres"]]
        users["age"] = pd.to_numeric(users["age"], errors="coerce").fillna(0).astype(float)
        codes = pd.to_numeric(users["occupation"], errors="coerce").fillna(0).astype(int)
        users["occupation"] = [OCCUPATIONS_1M[c] if 0 <= c < len(OCCUPATIONS_1M) else "other"
                               for c in codes]
    rows = ratings.merge(users, on="user", how="left", validate="many_to_one").merge(
        movies[["movie", "title", "genre"]], on="movie", how="left", validate="many_to_one")
    unknown = rows["title"].isna() | rows["gender"].isna()
    if unknown.any():
        first = rows[unknown].iloc[0]
        raise ValueError(
            f"MovieLens {variant} at {path}: {int(unknown.sum())} rating(s) name a user or movie "
            f"missing from {users_name}/{movies_name} (first: user {first['user']}, movie "
            f"{first['movie']}). Are the three files from the same download?")
    return {
        "user_id": rows["user"].tolist(), "movie_id": rows["movie"].tolist(),
        "movie_title": rows["title"].tolist(), "movie_genres": rows["genre"].tolist(),
        "user_gender": (rows["gender"] == "M").tolist(),
        "bucketized_user_age": rows["age"].astype(float).tolist(),
        "user_occupation_text": rows["occupation"].tolist(), "user_zip_code": rows["zip"].tolist(),
        "timestamp": pd.to_numeric(rows["timestamp"]).astype(np.int64).tolist(),
        "user_rating": pd.to_numeric(rows["rating"]).astype(np.float32).tolist(),
    }


def _file_reader(path: str, marker: str):
    """`read(name) -> bytes` for GroupLens' files in `path`: a folder holding `marker`, a folder
    one level above such a folder, or a zip of either."""
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        members = {os.path.basename(n): n for n in archive.namelist() if not n.endswith("/")}
        if marker not in members:
            raise FileNotFoundError(f"{path} holds no {marker}: not a GroupLens MovieLens zip "
                                    "of this variant.")
        return lambda name: archive.read(members[name])
    if os.path.isdir(path):
        candidates = [path] + [os.path.join(path, d) for d in sorted(os.listdir(path))
                               if os.path.isdir(os.path.join(path, d))]
        for folder in candidates:
            if os.path.exists(os.path.join(folder, marker)):
                def read(name, folder=folder):
                    with open(os.path.join(folder, name), "rb") as handle:
                        return handle.read()
                return read
    raise FileNotFoundError(f"No MovieLens {marker} at {path}: pass the folder (or zip) of "
                            "GroupLens' files.")


def history_column(users, movies, timestamps, length: int) -> list[np.ndarray]:
    """Per rating, the movies its user rated earlier (by timestamp, then by order in the data),
    most recent first, at most `length`: one int64 array per rating, in the given order."""
    users = np.asarray(users).astype(str)
    movies = np.asarray(movies).astype(np.int64)
    count = len(users)
    order = np.lexsort((np.arange(count), np.asarray(timestamps, np.int64), users))
    sorted_users, sorted_movies = users[order], movies[order]
    first = np.r_[True, sorted_users[1:] != sorted_users[:-1]]
    # Position of each sorted rating within its user's ratings: index minus the user's first.
    position = np.arange(count) - np.maximum.accumulate(np.where(first, np.arange(count), 0))
    padded = np.full((count, length), PADDING, np.int64)
    for back in range(1, length + 1):  # column back - 1: the movie rated `back` ratings earlier
        rows = np.flatnonzero(position >= back)
        padded[rows, back - 1] = sorted_movies[rows - back]
    lengths = np.minimum(position, length)
    histories = np.empty(count, dtype=object)
    for i in range(count):
        histories[order[i]] = padded[i, :lengths[i]]
    return list(histories)


def _first_genre(example: dict) -> dict:
    """Genres are a variable-length list; the first one (or "Unknown") makes rows batchable."""
    import tensorflow as tf

    genres = example["movie_genres"]
    unknown = tf.constant(GENRES.index("Unknown"), genres.dtype)
    first = tf.cond(tf.size(genres) > 0, lambda: genres[0], lambda: unknown)
    return {**example, "movie_genres": first}


def ratings_frame(columns: dict, like_threshold: float = 4.0) -> pd.DataFrame:
    """The model-ready frame from TFDS' MovieLens columns (bytes decoded, derived features)."""

    def text(key):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in columns[key]]

    rating = np.asarray(columns["user_rating"], np.float32)
    timestamp = pd.to_datetime(np.asarray(columns["timestamp"], np.int64), unit="s", utc=True)
    titles = pd.Series(text("movie_title"))
    year = pd.to_numeric(titles.str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce")
    return pd.DataFrame({
        "user_id": text("user_id"),
        "movie_id": text("movie_id"),
        "user_gender": np.where(np.asarray(columns["user_gender"], bool), "M", "F"),
        "user_age": [str(int(a)) for a in columns["bucketized_user_age"]],
        "user_occupation": text("user_occupation_text"),
        "user_zip_region": [z[:1] if z else "" for z in text("user_zip_code")],
        "movie_genre": [str(g) for g in columns["movie_genres"]],
        "hour": [str(h) for h in timestamp.hour],
        "weekday": [str(d) for d in timestamp.weekday],
        "movie_year": year.fillna(0).to_numpy(np.float32),
        "rating": rating,
        "liked": (rating >= like_threshold).astype(np.float32),
    })
