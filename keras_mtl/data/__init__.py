from keras_mtl.data.dataframe import feature_arrays, from_dataframe, label_arrays

__all__ = ["feature_arrays", "from_dataframe", "label_arrays"]
