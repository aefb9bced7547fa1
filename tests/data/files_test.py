"""Streaming from Parquet, CSV and TFRecord shards: the same rows `from_dataframe` gives, errors
naming file, row and column, shuffling through a bounded buffer, and a model trained from files."""

import os
import warnings

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_mtl as km
from keras_mtl.data import from_dataframe, from_files, list_files, read_sample
from keras_mtl.features.lookups import row_key

P = km.features.PADDING
SPEC = km.FeatureSpec([
    km.Numeric("price", log1p=True),
    km.Categorical("country", vocabulary=["de", "fr", "us"]),
    km.IntegerId("item_id", num_ids=50),
    km.Sequence("hist", max_length=3, shares_embedding_with="item_id"),
    km.Vector("vec", dim=2),
])
TASKS = [km.Task("click"), km.Task("buy", sample_space="click")]


def frame(n: int = 40, seed: int = 0, lists: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {
        "price": rng.lognormal(size=n), "country": rng.choice(["de", "fr", "us", "it"], n),
        "item_id": rng.integers(0, 50, n),
        "click": rng.integers(0, 2, n).astype(float),
        "buy": np.where(rng.random(n) < 0.3, np.nan, rng.integers(0, 2, n)),
    }
    if lists:
        data["hist"] = [list(rng.integers(0, 50, rng.integers(0, 5))) for _ in range(n)]
        data["vec"] = list(rng.normal(size=(n, 2)))
    return pd.DataFrame(data)


def write_shards(df: pd.DataFrame, folder, kind: str, shards: int = 3) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(df)), shards)):
        piece = df.iloc[part].reset_index(drop=True)
        path = os.path.join(folder, f"part-{i}.{kind}")
        if kind == "parquet":
            piece.to_parquet(path)
        elif kind == "csv":
            piece.to_csv(path, index=False)
        else:
            with tf.io.TFRecordWriter(path) as writer:
                for row in piece.itertuples(index=False):
                    writer.write(example(row._asdict()).SerializeToString())
        paths.append(path)
    return paths


def example(row: dict) -> tf.train.Example:
    def feature(value):
        if isinstance(value, list):  # an id list, empty or not
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in value]))
        if isinstance(value, str):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        values = np.atleast_1d(np.asarray(value))
        if values.dtype.kind in "iu":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values.tolist()))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values.tolist()))

    # A missing label is an absent key, as a log writer leaves it out.
    return tf.train.Example(features=tf.train.Features(feature={
        k: feature(v) for k, v in row.items() if not (np.isscalar(v) and pd.isna(v))}))


def collect(dataset) -> tuple[dict, dict]:
    xs, ys = [], []
    for x, y in dataset:
        xs.append({k: v.numpy() for k, v in x.items()})
        ys.append({k: v.numpy() for k, v in y.items()})
    return ({k: np.concatenate([x[k] for x in xs]) for k in xs[0]},
            {k: np.concatenate([y[k] for y in ys]) for k in ys[0]})


@pytest.mark.parametrize("kind", ["parquet", "csv", "tfrecord"])
def test_files_stream_the_rows_from_dataframe_gives(kind, tmp_path):
    df = frame(40, lists=kind != "csv")
    spec = SPEC if kind != "csv" else km.FeatureSpec([f for f in SPEC if f.name in df.columns])
    write_shards(df, tmp_path / kind, kind)
    streamed = collect(from_files(str(tmp_path / kind / f"*.{kind}"), spec, TASKS, batch_size=16,
                                  chunk_rows=5))
    expected = collect(from_dataframe(df, spec, TASKS, batch_size=16))
    # Files are read side by side, so rows arrive interleaved by chunk: compare in price order.
    order_got, order_want = np.argsort(streamed[0]["price"]), np.argsort(expected[0]["price"])
    for got, want in zip(streamed, expected, strict=True):
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_allclose(got[key][order_got], want[key][order_want], rtol=1e-6,
                                       err_msg=key)
    assert row_key("country") in streamed[0]  # looked up in the pipeline, as from_dataframe does


def test_batches_are_full_across_chunks_and_files(tmp_path):
    write_shards(frame(40), tmp_path, "parquet", shards=3)
    sizes = [len(y["click"]) for _, y in from_files(str(tmp_path), SPEC, TASKS, batch_size=16,
                                                     chunk_rows=7)]
    assert sizes == [16, 16, 8]


def test_shuffling_is_seeded_and_keeps_every_row(tmp_path):
    df = frame(60)
    write_shards(df, tmp_path, "parquet")

    def items(seed):
        x, _ = collect(from_files(str(tmp_path), SPEC, TASKS, batch_size=8, shuffle=True,
                                  seed=seed, shuffle_buffer=25, chunk_rows=10))
        return x["item_id"]

    first, again, other = items(1), items(1), items(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert sorted(first) == sorted(df["item_id"])


def test_errors_name_the_file_the_row_and_the_column(tmp_path):
    df = frame(30)
    df.loc[17, "price"] = np.inf
    paths = write_shards(df, tmp_path / "pq", "parquet", shards=2)  # row 17 is row 2 of part-1
    # Raised inside tf.data, which hands them on as InvalidArgumentError with the message.
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"part-1\.parquet: Numeric feature 'price' has value inf at row 2"):
        collect(from_files(paths, SPEC, TASKS, chunk_rows=4))
    with pytest.raises(KeyError, match=r"part-0\.parquet has no column 'vec'"):  # at once
        from_files(write_shards(df.drop(columns="vec"), tmp_path / "nv", "parquet"), SPEC, TASKS)
    bad = frame(10)
    bad.loc[3, "vec"] = np.asarray([1.0, 2.0, 3.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"part-0\.parquet.*'vec'.*row 3"):
        collect(from_files(write_shards(bad, tmp_path / "bv", "parquet", 1), SPEC, TASKS))
    inf = frame(10)
    inf.loc[6, "price"] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"'price.*non-finite.*part-0.tfrecord.*record\] \[6\]"):
        collect(from_files(write_shards(inf, tmp_path / "tf", "tfrecord", 1), SPEC, TASKS))
    with pytest.raises(FileNotFoundError, match="names no data file"):
        from_files(str(tmp_path / "*.nothing"), SPEC, TASKS)


def test_a_model_trains_from_parquet_shards_with_xla(tmp_path):
    write_shards(frame(64), tmp_path, "parquet")
    model = km.MultiTaskModel(SPEC, TASKS, backbone=km.layers.MMoE(2, [8]), tower_units=[4])
    model.compile(optimizer="adam", jit_compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not Keras' "ran out of data" for a stream of unknown length
        history = model.fit(from_files(str(tmp_path), SPEC, TASKS, batch_size=16, shuffle=True,
                                       seed=0), epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all() and model.jit_compile is True


def test_a_sample_for_adapt_is_uniform_and_bounded(tmp_path):
    df = pd.DataFrame({"x": np.arange(2000, dtype=np.int64), "s": [f"v{i % 7}" for i in range(2000)]})
    write_shards(df, tmp_path, "parquet", shards=4)
    sample = read_sample(str(tmp_path), max_rows=200, seed=0, chunk_rows=64)
    assert len(sample) == 200 and sample["x"].is_unique
    assert 700 < sample["x"].mean() < 1300  # not the first 200 rows (mean 99.5)
    assert set(sample["s"]) == {f"v{i}" for i in range(7)}
    everything = read_sample(str(tmp_path), max_rows=5000)
    assert sorted(everything["x"]) == list(range(2000))
    spec = km.FeatureSpec.infer(sample)
    assert isinstance(spec["s"], km.Categorical)
    assert list_files(str(tmp_path)) == sorted(str(p) for p in tmp_path.glob("*.parquet"))


def test_cli_trains_on_your_files_and_exports(tmp_path, capsys):
    from keras_mtl.cli import main

    df = frame(96, seed=3).drop(columns=["vec"])
    df["user_id"] = [f"u{i % 9}" for i in range(96)]
    write_shards(df.iloc[:64], tmp_path / "train", "parquet", shards=2)
    write_shards(df.iloc[64:], tmp_path / "val", "parquet", shards=1)
    model_path = str(tmp_path / "model.keras")
    assert main(["train", "--data", str(tmp_path / "train" / "*.parquet"), "--task", "click",
                 "--task", "buy:sample_space=click", "--validation-data", str(tmp_path / "val"),
                 "--model", "mmoe", "--epochs", "1", "--batch-size", "16", "--verbose", "0",
                 "--save", model_path]) is not None
    out = capsys.readouterr().out
    assert "user_id" in out and "inferred" in out  # the inference report, printed
    assert "--validation-data, after 1 epochs" in out and "buy" in out
    model = km.load_model(model_path)
    assert [t.name for t in model.tasks] == ["click", "buy"]
    assert model.tasks[1].sample_space == "click"
    assert isinstance(model.spec["hist"], km.MultiValued)  # a list column, recognised
    assert main(["export", model_path, str(tmp_path / "served")]) == 0
    assert os.path.exists(tmp_path / "served" / "1" / "saved_model.pb")
