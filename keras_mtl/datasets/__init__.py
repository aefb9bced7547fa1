"""Built-in data sets, each returned with its feature spec and tasks."""

from keras_mtl.datasets.ali_ccp import load_ali_ccp
from keras_mtl.datasets.aliexpress import load_aliexpress
from keras_mtl.datasets.base import MultiTaskDataset, split_frame
from keras_mtl.datasets.census_income import load_census_income
from keras_mtl.datasets.funnel import make_funnel
from keras_mtl.datasets.kuairand import load_kuairand
from keras_mtl.datasets.movielens import load_movielens
from keras_mtl.datasets.reading import DownloadError
from keras_mtl.datasets.synthetic import make_synthetic

__all__ = ["DownloadError", "MultiTaskDataset", "load_ali_ccp", "load_aliexpress",
           "load_census_income", "load_kuairand", "load_movielens", "make_funnel",
           "make_synthetic", "split_frame"]
