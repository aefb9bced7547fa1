from keras_mtl.models.loading import check_keras_archive, load_model
from keras_mtl.models.multi_task_model import MultiTaskModel

__all__ = ["MultiTaskModel", "check_keras_archive", "load_model"]
