"""How the columns of a `[K, D]` task-gradient matrix split into tensors."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class GradientLayout(NamedTuple):
    """The shape facts a balancer may need about the task-gradient matrix `J`.

    - `segment_sizes`: how the columns of `J` split into tensors (one per shared parameter tensor,
      or per cut tensor, batch included); `None` means one segment.
    - `batch_size`: rows in the batch (the leading dimension of every cut tensor), or `None`.
    - `cut_tensors`: at the representation level, the cut tensors, whose shapes structured blocks
      (`keras_mtl.gradients.blocks`) take when they are materialised.
    """

    segment_sizes: tuple | None = None
    batch_size: tf.Tensor | None = None
    cut_tensors: tuple | None = None
