"""MovieLens ratings through TensorFlow Datasets, as a two-task ranking problem."""

from __future__ import annotations

import numpy as np
import pandas as pd

from keras_mtl.datasets.base import MultiTaskDataset, split_frame
from keras_mtl.features import Categorical, FeatureSpec, Numeric
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
) -> MultiTaskDataset:
    """MovieLens `{variant}-ratings` from TFDS: predict the rating and whether the user liked it.

    Harper & Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 2015 (GroupLens
    licence: research use, no redistribution — TFDS downloads it from GroupLens into `data_dir`).

    Tasks: `rating` (regression on the 1-5 stars) and `liked` (binary: rating ≥ `like_threshold`).
    Features: `user_id`, `movie_id` (categorical, vocabularies from the training split),
    `user_gender`, `user_age` (the data's age bucket), `user_occupation`, `user_zip_region` (first
    digit of the zip code), `movie_genre` (the first listed genre), `hour` and `weekday` of the
    rating (UTC), `movie_year` (from the title, 0 when absent). Rows are split at random with
    `seed` into `fractions`.
    """
    import tensorflow_datasets as tfds

    if variant not in VARIANTS:
        raise ValueError(f"MovieLens variant must be one of {VARIANTS} (the ones with user "
                         f"demographics), got {variant!r}.")
    dataset = tfds.load(f"movielens/{variant}-ratings", split="train", data_dir=data_dir,
                        download=download)
    columns: dict[str, list] = {}
    for batch in tfds.as_numpy(dataset.map(_first_genre).batch(65_536)):
        for key, values in batch.items():
            if key == "movie_genres":
                values = [GENRES[v] for v in values]
            columns.setdefault(key, []).extend(list(values))
    frame = ratings_frame(columns, like_threshold)
    train, validation, test = split_frame(frame, fractions, seed)
    categorical = ["user_id", "movie_id", "user_gender", "user_age", "user_occupation",
                   "user_zip_region", "movie_genre", "hour", "weekday"]
    features = FeatureSpec(
        [Categorical(name, embedding_dim=16 if name.endswith("_id") else 4)
         for name in categorical] + [Numeric("movie_year")]
    ).adapt(train)
    return MultiTaskDataset(
        name=f"movielens-{variant}", train=train, validation=validation, test=test,
        features=features,
        tasks=[Task("rating", kind="regression"), Task("liked")],
        description=f"MovieLens {variant} ratings (TFDS), liked = rating ≥ {like_threshold}, "
                    f"random split {fractions}, seed={seed}",
    )


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
