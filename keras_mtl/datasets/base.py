"""`MultiTaskDataset`: splits of a data set together with its feature spec and tasks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import tensorflow as tf

from keras_mtl.data import from_dataframe
from keras_mtl.features import FeatureSpec
from keras_mtl.tasks import Task

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class MultiTaskDataset:
    """A data set ready for `MultiTaskModel`: DataFrame splits, the feature spec, the tasks."""

    name: str
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    features: FeatureSpec
    tasks: list[Task]
    description: str = ""

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLITS}.")
        return getattr(self, name)

    def head(self, max_rows: int, seed: int = 0) -> MultiTaskDataset:
        """A copy with at most `max_rows` training rows (and proportionally fewer validation and
        test rows), drawn at random with `seed` — for quick runs. Spec and tasks are kept."""
        if max_rows < 1:
            raise ValueError(f"max_rows must be positive, got {max_rows}.")
        fraction = min(1.0, max_rows / max(len(self.train), 1))

        def sample(frame, limit):
            if len(frame) <= limit:
                return frame
            return frame.sample(n=limit, random_state=seed).sort_index().reset_index(drop=True)

        return dataclasses.replace(
            self,
            train=sample(self.train, max_rows),
            validation=sample(self.validation, max(1, int(round(fraction * len(self.validation))))),
            test=sample(self.test, max(1, int(round(fraction * len(self.test))))),
        )

    def as_tf_dataset(
        self, split: str, batch_size: int = 256, shuffle: bool | None = None, seed: int = 0
    ) -> tf.data.Dataset:
        """Batches of `(features, labels)`; the train split is shuffled unless told otherwise."""
        if shuffle is None:
            shuffle = split == "train"
        return from_dataframe(self.split(split), self.features, self.tasks,
                              batch_size=batch_size, shuffle=shuffle, seed=seed)


def split_frame(frame: pd.DataFrame, fractions=(0.8, 0.1, 0.1), seed: int = 0):
    """A seeded random split of the rows into train/validation/test by `fractions`."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1):
        raise ValueError(f"fractions must be three numbers >= 0 summing to 1, got {fractions}.")
    order = np.random.default_rng(seed).permutation(len(frame))
    n_train = int(round(fractions[0] * len(frame)))
    n_val = int(round(fractions[1] * len(frame)))
    parts = np.split(order, [n_train, n_train + n_val])
    return tuple(frame.iloc[np.sort(p)].reset_index(drop=True) for p in parts)
