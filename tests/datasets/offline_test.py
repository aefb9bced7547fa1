"""A failed download says what to do offline in one message, for every loader that downloads; the
local-only data sets go through `keras-mtl train --dataset ... --data-path`."""

import sys
import types

import keras
import pytest

from keras_mtl.cli import main
from keras_mtl.datasets import DownloadError, census_income, load_census_income, load_movielens
from tests.datasets.aliexpress_test import write_country
from tests.datasets.kuairand_test import write_release


def test_census_from_an_unreachable_url_says_pass_path(tmp_path, monkeypatch):
    # Port 9 (discard) on the loopback interface: refused at once, no network involved.
    monkeypatch.setattr(census_income, "URL", "http://127.0.0.1:9/census-income.test.gz")
    with pytest.raises(DownloadError) as caught:
        load_census_income(cache_dir=str(tmp_path))
    message = str(caught.value)
    assert "Offline? pass path=... to load_census_income()" in message
    assert "(or --data-path ... to keras-mtl)" in message and "127.0.0.1:9" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_cli_prints_one_line_instead_of_a_traceback(monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise Exception("URL fetch failure on https://archive.ics.uci.edu/...: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    assert main(["train", "--dataset", "census-income", "--epochs", "1", "--verbose", "0"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("keras-mtl train: Could not download census-income.test.gz")
    assert "Offline? pass path=" in error and "--data-path" in error
    assert "Traceback" not in error and len(error.splitlines()) == 1


def test_movielens_through_tfds_says_pass_path(monkeypatch):
    fake = types.ModuleType("tensorflow_datasets")

    def load(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection")

    fake.load = load
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    with pytest.raises(DownloadError, match=r"Offline\? pass path=\.\.\. to load_movielens\(\).*"
                                            r"--movielens-path"):
        load_movielens("100k")


def test_local_only_datasets_need_data_path(capsys):
    with pytest.raises(SystemExit, match="--dataset ali-ccp needs --data-path"):
        main(["train", "--dataset", "ali-ccp"])


def test_train_on_aliexpress_and_kuairand_files(tmp_path, capsys):
    folder = write_country(tmp_path / "ae", train_rows=300)
    assert main(["train", "--dataset", "aliexpress", "--data-path", str(folder), "--model",
                 "mmoe", "--epochs", "1", "--verbose", "0", "--conversion", "esmm",
                 "--expert-units", "8", "--tower-units", "4"]) == 0
    out = capsys.readouterr().out
    assert "AliExpress NL" in out and "conversion" in out and "click" in out
    root = write_release(tmp_path / "kr")
    assert main(["train", "--dataset", "kuairand", "--data-path", root, "--task", "is_click",
                 "--task", "watch_time", "--max-rows", "150", "--model", "shared-bottom",
                 "--epochs", "1", "--verbose", "0", "--expert-units", "8"]) == 0
    out = capsys.readouterr().out
    assert "tasks: ['is_click', 'watch_time']" in out and "first 150 rows" in out
