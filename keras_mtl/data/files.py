"""Training data streamed from files — Parquet, CSV, TFRecord — never loaded whole.

`from_files` builds the `tf.data` pipeline a production log needs: shards listed from paths,
globs or folders; several files read side by side (`interleave`); each file read in chunks of
`chunk_rows` rows and checked exactly as `from_dataframe` checks a frame (the same column, label,
list and vector rules, the error naming the file as well as the column and row); lookups done
on the chunk (`keras_mtl.features.lookups`), so the step compiles with XLA; rows shuffled through a
bounded buffer; batched; prefetched. Memory is bounded by the chunks in flight and the buffer,
not by the files' size.

Readers, chosen by what each format has: Parquet and CSV through pyarrow (Parquet row groups and
CSV blocks stream as record batches, with list columns for id lists and vectors; TensorFlow has
no Parquet reader, and its CSV reader has no list cells nor a per-row error with the row's number),
TFRecord (`tf.train.Example`) through TensorFlow's own reader and `tf.io.parse_example`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from keras_mtl.data.dataframe import feature_arrays, label_arrays
from keras_mtl.data.pipeline import with_lookups
from keras_mtl.features.lists import PADDING
from keras_mtl.features.lookups import LookupStage
from keras_mtl.features.spec import TF_DTYPES, FeatureSpec, IdList, Vector, as_feature_spec
from keras_mtl.tasks import Task, validate_tasks

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv",
           ".tfrecord": "tfrecord", ".tfrecords": "tfrecord", ".tfr": "tfrecord"}


def list_files(paths: str | Sequence[str]) -> list[str]:
    """The files named by `paths`: a path, a glob (`logs/*.parquet`), a folder (its files, sorted)
    or a list of these. A pattern or folder that names nothing is an error."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files: list[str] = []
    for path in map(str, paths):
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if os.path.isfile(os.path.join(path, f)) and not f.startswith((".", "_")))
        elif any(c in path for c in "*?["):
            found = sorted(glob.glob(path))
        else:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"No such data file: {path}.")
            found = [path]
        if not found:
            raise FileNotFoundError(f"{path!r} names no data file.")
        files += found
    return files


def file_format(path: str) -> str:
    """`"parquet"`, `"csv"` or `"tfrecord"`, from the file's extension (`.gz` looked through)."""
    name = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(name)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"Cannot tell the format of {path}: expected one of {sorted(FORMATS)} "
                         "(optionally .gz), or pass format='parquet'|'csv'|'tfrecord'.")
    return FORMATS[ext]


def read_chunks(path: str, columns: Sequence[str], chunk_rows: int = 8192,
                format: str | None = None) -> Iterator[pd.DataFrame]:
    """`columns` of a Parquet or CSV file as DataFrames of at most `chunk_rows` rows, whose index
    is each row's number in the file (0-based, header excluded)."""
    for frame, _ in _chunks(path, columns, chunk_rows, format, {}):
        yield frame


def _chunks(path: str, columns: Sequence[str], chunk_rows: int, format: str | None,
            id_lists: dict[str, int]) -> Iterator[tuple[pd.DataFrame, dict]]:
    """`read_chunks`, with the integer-list columns named in `id_lists` (`{column: max_length}`)
    handed over beside the frame, already padded as int64 `[rows, max_length]` (vectorised from
    Arrow's offsets: 5× faster than converting cell by cell)."""
    import pyarrow as pa

    for batch, start in _record_batches(path, columns, chunk_rows, format):
        padded = {}
        for name, max_length in id_lists.items():
            array = padded_id_lists(batch.column(name), max_length)
            if array is not None:
                padded[name] = array
                batch = batch.drop_columns([name])
        frame = pa.Table.from_batches([batch]).to_pandas()
        frame.index = pd.RangeIndex(start, start + len(frame))
        yield frame, padded


def padded_id_lists(column, max_length: int) -> np.ndarray | None:
    """An Arrow list-of-integers column as int64 `[rows, max_length]`: each row's first
    `max_length` ids, then `PADDING`; a null row is empty. None for any other type (or null ids
    inside a list), which the cell-by-cell path then checks and reports."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return None
    if not pa.types.is_integer(column.type.value_type):
        return None
    values = column.values
    if values.null_count:
        return None
    offsets = column.offsets.to_numpy()
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    if column.null_count:
        lengths = np.where(pc.is_null(column).to_numpy(zero_copy_only=False), 0, lengths)
    flat = values.to_numpy().astype(np.int64, copy=False)[offsets[0]:offsets[-1]]
    positions = np.arange(max_length)
    present = positions[None, :] < lengths[:, None]
    index = np.where(present, starts[:, None] + positions[None, :], 0)
    return np.where(present, flat[index] if len(flat) else PADDING, PADDING).astype(np.int64)


def _record_batches(path: str, columns: Sequence[str], chunk_rows: int, format: str | None):
    """`(Arrow record batch, its first row's number)` of a Parquet or CSV file."""
    format = format or file_format(path)
    if format == "parquet":
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(path)
        missing = [c for c in columns if c not in handle.schema_arrow.names]
        _check_columns(path, missing, handle.schema_arrow.names)
        batches = handle.iter_batches(batch_size=chunk_rows, columns=list(columns))
    elif format == "csv":
        import pyarrow.csv as pcsv

        delimiter = "\t" if path.removesuffix(".gz").endswith(".tsv") else ","
        reader = pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(block_size=1 << 22),
            parse_options=pcsv.ParseOptions(delimiter=delimiter),
            convert_options=pcsv.ConvertOptions(include_columns=list(columns),
                                                strings_can_be_null=True))
        _check_columns(path, [c for c in columns if c not in reader.schema.names],
                       reader.schema.names)
        batches = (piece for batch in reader for piece in _split(batch, chunk_rows))
    else:
        raise ValueError(f"read_chunks reads Parquet and CSV; {path} is {format}.")
    start = 0
    for batch in batches:
        yield batch, start
        start += batch.num_rows


def read_sample(paths: str | Sequence[str], max_rows: int = 100_000, seed: int = 0,
                columns: Sequence[str] | None = None, chunk_rows: int = 65_536,
                format: str | None = None) -> pd.DataFrame:
    """A uniform random sample of at most `max_rows` rows of Parquet or CSV files, in one
    streaming pass with memory for `max_rows` rows (reservoir sampling over the chunks), for
    `FeatureSpec.infer` / `adapt` on data larger than memory. `columns=None` reads every column."""
    rng = np.random.default_rng(seed)
    kept: dict[str, np.ndarray] | None = None  # column → the kept rows' values
    size = seen = 0
    for path in list_files(paths):
        kind = format or file_format(path)
        wanted = columns if columns is not None else _all_columns(path, kind)
        for frame in read_chunks(path, wanted, chunk_rows, kind):
            arrays = {c: frame[c].to_numpy() for c in frame.columns}
            if kept is None:
                kept = {c: np.empty(max_rows, dtype=a.dtype if a.dtype.kind != "U" else object)
                        for c, a in arrays.items()}
            # Reservoir sampling (Vitter's algorithm R), a chunk at a time: the stream's row t
            # (0-based) takes a uniformly drawn slot < t + 1 and stays if that slot < max_rows.
            t = seen + np.arange(len(frame))
            seen += len(frame)
            fill = min(max_rows - size, len(frame))
            slots = (rng.random(len(frame)) * (t + 1)).astype(np.int64)
            slots[:fill] = np.arange(size, size + fill)  # the reservoir is not full yet
            size += fill
            take = np.flatnonzero(slots < max_rows)
            # A slot drawn twice in one chunk keeps the later row, as one row at a time would.
            _, last = np.unique(slots[take][::-1], return_index=True)
            take = take[::-1][last]
            for column, values in arrays.items():
                chosen = values[take]
                if chosen.dtype == object:
                    # A list cell is a view into its chunk's Arrow buffer: keeping it would keep
                    # the whole chunk alive, and memory would grow with the files' size.
                    chosen = np.asarray([np.array(v) if isinstance(v, np.ndarray) else v
                                         for v in chosen] + [None], dtype=object)[:-1]
                kept[column][slots[take]] = chosen
    if kept is None or size == 0:
        raise ValueError(f"{paths!r} holds no rows.")
    return pd.DataFrame({c: v[:size] for c, v in kept.items()})


def _all_columns(path: str, kind: str) -> list[str]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    import pyarrow.csv as pcsv

    return list(pcsv.open_csv(path).schema.names)


def _split(batch, rows: int):
    for offset in range(0, batch.num_rows, rows):
        yield batch.slice(offset, rows)


def _check_columns(path: str, missing: list[str], present: Sequence[str]) -> None:
    if missing:
        raise KeyError(f"{path} has no column {missing[0]!r} (missing: {missing}); its columns: "
                       f"{list(present)}.")


def from_files(
    paths: str | Sequence[str],
    features: FeatureSpec | Sequence,
    tasks: Sequence[Task],
    batch_size: int = 256,
    shuffle: bool = False,
    seed: int | None = None,
    shuffle_buffer: int = 100_000,
    chunk_rows: int = 8192,
    num_parallel_reads: int = 2,
    sample_weight: str | None = None,
    lookups: bool = True,
    format: str | None = None,
) -> tf.data.Dataset:
    """A batched `tf.data.Dataset` of `(features, labels[, sample_weight])` streamed from files.

    Args:
        paths: files, globs or folders (`list_files`); Parquet, CSV or TFRecord by extension
            unless `format` says.
        features, tasks: as for `from_dataframe`; every feature and task is a column (a
            `tf.train.Example` key); missing labels are NaN (TFRecord: an absent key).
        shuffle: shuffle the file order each epoch, and the rows: permuted within each chunk,
            then in blocks of up to `SHUFFLE_BLOCK_ROWS` through a buffer of `shuffle_buffer`
            rows (memory: that many rows); all drawn from `seed`, new each epoch.
        chunk_rows: rows read, checked and looked up at a time per file.
        num_parallel_reads: files read side by side.
        sample_weight: a column of row weights, as in `from_dataframe`.
        lookups: categorical lookups in the pipeline (see `from_dataframe`).

    Errors are raised while iterating, when the chunk that holds them is read, and name the file,
    the row's number in it (0-based, header excluded) and the column, with `from_dataframe`'s
    rules for values; tf.data hands them on as `tf.errors.InvalidArgumentError` carrying that
    message.
    """
    spec = as_feature_spec(features)
    tasks = validate_tasks(tasks)
    files = list_files(paths)
    formats = {format or file_format(f) for f in files}
    if len(formats) > 1:
        raise ValueError(f"The files mix formats {sorted(formats)}; pass one kind at a time.")
    (kind,) = formats
    if kind == "tfrecord":
        reader = _tfrecord_reader(spec, tasks, sample_weight, chunk_rows)
    else:
        wanted = [*spec.names, *[t.name for t in tasks]] + ([sample_weight] if sample_weight else [])
        for path in files:  # every shard's header now, not at its turn in the middle of an epoch
            present = _all_columns(path, kind)
            _check_columns(path, [c for c in wanted if c not in present], present)
        reader = _table_reader(spec, tasks, sample_weight, chunk_rows, kind)
    names = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # Deterministic: a seeded pipeline gives the same rows in the same order every run.
    chunks = names.interleave(reader, cycle_length=max(1, min(num_parallel_reads, len(files))),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if lookups:
        chunks = with_lookups(chunks, LookupStage(spec))
    if shuffle:
        # Rows are shuffled in blocks, not one by one (unbatch → shuffle → batch ran at a quarter
        # of the unshuffled pipeline's speed): each chunk's rows are permuted, cut into blocks of
        # `block` rows, and the blocks pass a buffer of `shuffle_buffer` rows; a batch then
        # gathers batch_size / block blocks drawn from across the buffer's chunks and files.
        block = max(1, min(SHUFFLE_BLOCK_ROWS, batch_size // 4))
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        chunks = tf.data.Dataset.zip((chunks, keys)).map(
            _permuted, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        blocks = chunks.rebatch(block).shuffle(max(1, shuffle_buffer // block), seed=seed,
                                               reshuffle_each_iteration=True)
        dataset = blocks.rebatch(batch_size)
    else:
        dataset = chunks.rebatch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


# The most rows a shuffle block holds (see `from_files`): a batch of 2,048 gathers 16 blocks.
SHUFFLE_BLOCK_ROWS = 128


def _permuted(element: tuple, key: tf.Tensor) -> tuple:
    """A chunk's rows in a random order drawn from `key` (a new key per chunk and epoch)."""
    rows = tf.shape(tf.nest.flatten(element)[0])[0]
    order = tf.argsort(tf.random.stateless_uniform([rows], seed=tf.stack([key, 0])))
    return tf.nest.map_structure(lambda column: tf.gather(column, order), element)


def _signature(spec: FeatureSpec, tasks: Sequence[Task], sample_weight: str | None) -> tuple:
    features = {f.name: tf.TensorSpec([None, *f.shape], TF_DTYPES[f.dtype]) for f in spec}
    labels = {t.name: tf.TensorSpec([None], tf.float32) for t in tasks}
    if sample_weight is None:
        return features, labels
    return features, labels, tf.TensorSpec([None], tf.float32)


def _table_reader(spec, tasks, sample_weight, chunk_rows, kind):
    """`file name → dataset of checked chunks` for Parquet and CSV (pyarrow in a generator)."""
    columns = [*spec.names, *[t.name for t in tasks]] + ([sample_weight] if sample_weight else [])
    id_lists = {f.name: f.max_length for f in spec if isinstance(f, IdList)}

    def chunks(path):
        path = path.decode() if isinstance(path, bytes) else str(path)
        for frame, padded in _chunks(path, columns, chunk_rows, kind, id_lists):
            try:
                features = feature_arrays(frame, spec, padded)
                labels = label_arrays(frame, tasks, warn_unlabelled=False)
            except (ValueError, KeyError, TypeError) as error:
                raise type(error)(f"{path}: {error}") from None
            if sample_weight is None:
                yield features, labels
            else:
                yield features, labels, frame[sample_weight].to_numpy(np.float32)

    signature = _signature(spec, tasks, sample_weight)
    return lambda path: tf.data.Dataset.from_generator(chunks, args=(path,),
                                                       output_signature=signature)


def _tfrecord_reader(spec, tasks, sample_weight, chunk_rows):
    """`file name → dataset of parsed chunks` for `tf.train.Example` records."""
    description = {}
    for feature in spec:
        if isinstance(feature, IdList):
            description[feature.name] = tf.io.VarLenFeature(tf.int64)
        elif isinstance(feature, Vector):
            description[feature.name] = tf.io.FixedLenFeature([feature.dim], tf.float32)
        elif feature.dtype == "float32":  # Numeric: an absent value is missing (the mean)
            description[feature.name] = tf.io.FixedLenFeature([], tf.float32, float("nan"))
        elif feature.dtype == "string":
            description[feature.name] = tf.io.FixedLenFeature([], tf.string, "")
        else:  # an integer id must be there
            description[feature.name] = tf.io.FixedLenFeature([], tf.int64)
    for task in tasks:
        description[task.name] = tf.io.FixedLenFeature([], tf.float32, float("nan"))
    if sample_weight is not None:
        description[sample_weight] = tf.io.FixedLenFeature([], tf.float32, 1.0)

    def parse(index, records, path):
        parsed = tf.io.parse_example(records, description)
        features = {}
        for feature in spec:
            value = parsed[feature.name]
            if isinstance(feature, IdList):
                dense = tf.sparse.to_dense(value, default_value=tf.constant(PADDING, tf.int64))
                width = tf.shape(dense)[1]
                dense = tf.pad(dense, [[0, 0], [0, tf.maximum(feature.max_length - width, 0)]],
                               constant_values=PADDING)[:, :feature.max_length]
                value = tf.ensure_shape(dense, [None, feature.max_length])
            elif feature.dtype == "float32":
                finite = tf.math.is_finite(value) | tf.math.is_nan(value)
                if isinstance(feature, Vector):
                    finite = tf.reduce_all(tf.math.is_finite(value), axis=-1)
                row = index * chunk_rows + tf.argmin(tf.cast(finite, tf.int32), output_type=tf.int64)
                kind = "Vector" if isinstance(feature, Vector) else "Numeric"
                tf.debugging.Assert(tf.reduce_all(finite), [
                    f"{kind} feature {feature.name!r} has a non-finite value (±inf; NaN is "
                    "missing for a Numeric) in file", path, "at record", row])
            features[feature.name] = value
        labels = {task.name: parsed[task.name] for task in tasks}
        if sample_weight is None:
            return features, labels
        return features, labels, parsed[sample_weight]

    def read(path):
        records = tf.data.TFRecordDataset(path).batch(chunk_rows).enumerate()
        return records.map(lambda i, r: parse(i, r, path))

    return read
