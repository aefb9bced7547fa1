from keras_mtl.data.dataframe import feature_arrays, from_dataframe, label_arrays
from keras_mtl.data.files import from_files, list_files, read_chunks, read_sample
from keras_mtl.data.pipeline import plain_inputs, validation_inputs, with_lookups

__all__ = ["feature_arrays", "from_dataframe", "from_files", "label_arrays", "list_files",
           "plain_inputs", "read_chunks", "read_sample", "validation_inputs", "with_lookups"]
