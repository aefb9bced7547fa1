from keras_mtl.data.dataframe import feature_arrays, from_dataframe, label_arrays
from keras_mtl.data.pipeline import plain_inputs, validation_inputs, with_lookups

__all__ = ["feature_arrays", "from_dataframe", "label_arrays", "plain_inputs", "validation_inputs",
           "with_lookups"]
