import gzip
import os
import shutil

import numpy as np
import pytest

from keras_mtl.datasets import load_census_income
from keras_mtl.datasets.census_income import EXCLUDED
from tests.helpers import CENSUS_FILE

pytestmark = pytest.mark.skipif(not os.path.exists(CENSUS_FILE),
                                reason="../shared/data/census-income.test.gz is not present")


@pytest.fixture(scope="module")
def census():
    return load_census_income(path=CENSUS_FILE, seed=0)


def test_rows_split_and_tasks(census):
    assert len(census.train) + len(census.validation) + len(census.test) == 99762
    assert len(census.train) == 79810
    assert [t.name for t in census.tasks] == ["income", "never_married"]
    # Published class balance of the UCI test file: about 6.2 % earn more than $50K.
    rate = census.train["income"].mean()
    assert 0.055 < rate < 0.07
    assert 0.35 < census.train["never_married"].mean() < 0.5


def test_labels_never_leak_into_features(census):
    assert not EXCLUDED & set(census.features.names)
    assert len(census.features) == 39


def test_vocabularies_come_from_the_train_split_only(census):
    vocabulary = set(census.features["education"].vocabulary)
    assert vocabulary <= set(census.train["education"])


def test_seed_changes_the_split(census):
    other = load_census_income(path=CENSUS_FILE, seed=1)
    assert not np.array_equal(other.test["age"].to_numpy(), census.test["age"].to_numpy())


def test_a_tampered_file_fails_the_checksum(tmp_path):
    target = tmp_path / "census-income.test.gz"
    with gzip.open(CENSUS_FILE, "rb") as src, gzip.open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.write(b"extra\n")
    with pytest.raises(ValueError, match="sha256"):
        load_census_income(path=str(tmp_path))


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="No census-income file"):
        load_census_income(path=str(tmp_path))
