import numpy as np
import pytest
import tensorflow_datasets as tfds

import keras_mtl as km
from keras_mtl.datasets import load_movielens
from keras_mtl.datasets.movielens import ratings_frame


def test_ratings_frame_decodes_and_derives_features():
    columns = {
        "user_id": [b"12", b"7"], "movie_id": [b"3", b"9"],
        "movie_title": [b"Heat (1995)", b"Untitled"], "movie_genres": ["Crime", "Drama"],
        "user_gender": [True, False], "bucketized_user_age": [25.0, 45.0],
        "user_occupation_text": [b"writer", b"doctor"], "user_zip_code": [b"55105", b""],
        "timestamp": [0, 86_400 * 3 + 3600 * 5], "user_rating": [4.0, 3.0],
    }
    frame = ratings_frame(columns)
    assert list(frame["user_id"]) == ["12", "7"]
    assert list(frame["user_gender"]) == ["M", "F"]
    assert list(frame["user_age"]) == ["25", "45"]
    assert list(frame["user_zip_region"]) == ["5", ""]
    assert list(frame["movie_year"]) == [1995.0, 0.0]
    assert list(frame["hour"]) == ["0", "5"] and list(frame["weekday"]) == ["3", "6"]
    assert list(frame["liked"]) == [1.0, 0.0]


def test_loads_through_tfds_offline_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        data = load_movielens("100k", data_dir=str(tmp_path))
    assert len(data.train) + len(data.validation) + len(data.test) == 64
    np.testing.assert_array_equal(data.train["liked"], data.train["rating"] >= 4)
    assert [t.name for t in data.tasks] == ["rating", "liked"]
    assert data.features["user_id"].vocabulary  # adapted on the training split
    model = km.MultiTaskModel(features=data.features, tasks=data.tasks,
                              backbone=km.layers.SharedBottom(units=[8]), tower_units=[4])
    model.compile(optimizer="adam")
    history = model.fit(data.as_tf_dataset("train", batch_size=16), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="100k"):
        load_movielens("20m")
