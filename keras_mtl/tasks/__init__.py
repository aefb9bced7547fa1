from keras_mtl.tasks.task import Task, validate_tasks

__all__ = ["Task", "validate_tasks"]
