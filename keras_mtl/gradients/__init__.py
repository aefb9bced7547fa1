"""How per-task gradient information is obtained: losses, cut gradients, parameter gradients.

It imports no balancer: `keras_mtl.balancers` reduce what this package extracts.
"""

from keras_mtl.gradients.blocks import OuterProductBlock
from keras_mtl.gradients.layout import GradientLayout
from keras_mtl.gradients.task_gradients import LEVELS, TaskGradients

__all__ = ["LEVELS", "GradientLayout", "OuterProductBlock", "TaskGradients"]
