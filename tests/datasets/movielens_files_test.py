"""MovieLens from GroupLens' own files (small files written here in each variant's exact layout),
and the user history the loader derives from them."""

import os
import zipfile

import numpy as np
import pytest

import keras_mtl as km
from keras_mtl.datasets import load_movielens
from keras_mtl.datasets.movielens import history_column

P = km.features.PADDING


def write_100k(folder, ratings):
    """`ratings`: (user, movie, stars, timestamp). Users 1-3, movies 1-4, as GroupLens writes them."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "u.data"), "w") as f:
        f.writelines(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in ratings)
    with open(os.path.join(folder, "u.user"), "w") as f:
        f.write("1|24|M|technician|85711\n2|53|F|other|94043\n3|17|M|writer|32067\n")
    genres = {1: "0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0", 2: "0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0",
              3: "0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0", 4: "1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0"}
    titles = {1: "Toy Story (1995)", 2: "GoldenEye (1995)", 3: "Four Rooms (1995)", 4: "Café (1994)"}
    with open(os.path.join(folder, "u.item"), "w", encoding="latin-1") as f:
        f.writelines(f"{m}|{titles[m]}|01-Jan-1995||http://us.imdb.com/M/x|{genres[m]}\n"
                     for m in titles)


def write_1m(folder, ratings):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "ratings.dat"), "w") as f:
        f.writelines(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in ratings)
    with open(os.path.join(folder, "users.dat"), "w") as f:
        f.write("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    with open(os.path.join(folder, "movies.dat"), "w", encoding="latin-1") as f:
        f.write("1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure\n"
                "3::Heat (1995)::Action|Crime\n4::Untitled::\n")


RATINGS = [(1, 2, 5, 300), (1, 1, 3, 100), (2, 3, 4, 50), (1, 3, 2, 200), (3, 4, 1, 10),
           (2, 1, 5, 60), (1, 4, 4, 400), (3, 2, 4, 20), (2, 2, 2, 70), (3, 1, 5, 30)]


def all_rows(data):
    import pandas as pd

    return pd.concat([data.train, data.validation, data.test], ignore_index=True)


@pytest.mark.parametrize("variant, write", [("100k", write_100k), ("1m", write_1m)])
def test_loads_grouplens_files_with_the_tfds_columns(variant, write, tmp_path):
    write(str(tmp_path / f"ml-{variant}"), RATINGS)
    data = load_movielens(variant, path=str(tmp_path))  # the folder above ml-*/ works too
    rows = all_rows(data)
    assert len(rows) == len(RATINGS)
    assert [t.name for t in data.tasks] == ["rating", "liked"]
    np.testing.assert_array_equal(rows["liked"], rows["rating"] >= 4)
    first = rows[(rows["user_id"] == "1") & (rows["movie_id"] == "1")].iloc[0]
    if variant == "100k":  # age 24 goes to 1M's bucket 18; the first flagged genre
        assert (first["user_gender"], first["user_age"], first["user_occupation"]) == (
            "M", "18", "technician")
        assert first["movie_genre"] == "Animation"
    else:  # code 10 is "K-12 student"; the first listed genre
        assert (first["user_gender"], first["user_age"], first["user_occupation"]) == (
            "F", "1", "K-12 student")
        assert first["movie_genre"] == "Animation"
    assert first["movie_year"] == 1995.0
    assert first["user_zip_region"] == ("8" if variant == "100k" else "4")
    assert set(data.features.names) >= {"user_id", "movie_id", "movie_genre", "movie_year"}


def test_reads_the_unopened_zip(tmp_path):
    write_100k(str(tmp_path / "ml-100k"), RATINGS)
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("u.data", "u.user", "u.item"):
            z.write(tmp_path / "ml-100k" / name, f"ml-100k/{name}")
    assert len(all_rows(load_movielens("100k", path=str(archive)))) == len(RATINGS)


def test_missing_files_and_mismatched_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="No MovieLens u.data"):
        load_movielens("100k", path=str(tmp_path))
    write_100k(str(tmp_path / "x"), [(9, 1, 5, 0)])  # user 9 is not in u.user
    with pytest.raises(ValueError, match="user 9.*same download"):
        load_movielens("100k", path=str(tmp_path / "x"))


def test_history_is_the_earlier_movies_most_recent_first_and_never_the_row_itself():
    users = ["a", "a", "b", "a", "a"]
    movies = [1, 2, 3, 4, 5]
    times = [30, 10, 5, 20, 20]  # a's order: 2 (10), 4 (20), 5 (20, later in the data), 1 (30)
    histories = history_column(users, movies, times, length=2)
    assert [h.tolist() for h in histories] == [[5, 4], [], [], [2], [4, 2]]


def test_history_feature_shares_the_movie_table_and_trains(tmp_path):
    write_100k(str(tmp_path), RATINGS)
    data = load_movielens("100k", path=str(tmp_path), history=3)
    spec = data.features
    assert isinstance(spec["movie_id"], km.IntegerId) and spec["movie_id"].num_ids == 5
    assert spec["movie_history"].shares_embedding_with == "movie_id"
    assert spec["movie_history"].pooling == "attention"
    rows = all_rows(data)
    later = rows[(rows["user_id"] == "1") & (rows["movie_id"] == 4)].iloc[0]  # t=400: last
    assert later["movie_history"].tolist() == [2, 3, 1]
    model = km.MultiTaskModel(spec, data.tasks, backbone=km.layers.MMoE(2, [8]), tower_units=[4])
    model.compile(optimizer="adam", jit_compile=True)
    history = model.fit(data.as_tf_dataset("train", batch_size=8), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all() and model.jit_compile is True
    assert P not in [m for h in rows["movie_history"] for m in h]
