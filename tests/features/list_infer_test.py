"""FeatureSpec.infer and adapt on list-valued columns: id lists and vectors."""

import numpy as np
import pandas as pd
import pytest

import keras_mtl as km
from keras_mtl.features import FeatureSpec


def frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 6, n)
    lengths[0] = 30  # one very long row: the cap follows the 95% quantile, not the maximum
    return pd.DataFrame({
        "tags": [list(rng.integers(0, 12, k)) for k in lengths],
        "embedding": [rng.normal(size=3) for _ in range(n)],
        "price": rng.normal(size=n),
        "click": rng.integers(0, 2, n).astype(float),
    })


def test_integer_lists_become_multi_valued_and_float_arrays_vectors():
    data = frame()
    spec = FeatureSpec.infer(data, tasks=["click"])
    tags = spec["tags"]
    assert isinstance(tags, km.MultiValued) and tags.pooling == "mean"
    assert tags.num_ids == max(max(t) for t in data["tags"] if t) + 1
    lengths = data["tags"].map(len).to_numpy()
    assert tags.max_length == int(np.ceil(np.quantile(lengths, 0.95))) < 30
    assert spec["embedding"] == km.Vector("embedding", dim=3)
    report = spec.inference_report
    assert report["tags"].decision.startswith("MultiValued (")
    assert "95% quantile" in report["tags"].reason
    assert report["tags"].distinct == len({i for t in data["tags"] for i in t})
    assert report["embedding"].decision == "Vector (3 floats)"
    assert "constant length 3" in report["embedding"].reason


def test_list_columns_that_cannot_be_inferred_are_named():
    with pytest.raises(ValueError, match="'v' holds float lists of lengths 2–3"):
        FeatureSpec.infer(pd.DataFrame({"v": [[0.5, 1.5], [1.0, 2.0, 3.0]]}))
    with pytest.raises(ValueError, match="'mixed' mixes lists and other values: row 1 holds int"):
        FeatureSpec.infer(pd.DataFrame({"mixed": [[1, 2], 3]}))
    with pytest.raises(ValueError, match="'tags' holds lists: it cannot be categorical="):
        FeatureSpec.infer(pd.DataFrame({"tags": [[1], [2]]}), categorical=["tags"])
    with pytest.raises(ValueError, match="every list is empty"):
        FeatureSpec.infer(pd.DataFrame({"tags": [[], []]}))


def test_adapt_sizes_a_table_from_every_feature_that_shares_it():
    data = pd.DataFrame({"hist": [[3, 1], [], None], "similar": [[9], [2, 2], [0]]})
    spec = FeatureSpec([km.Sequence("hist", max_length=4),
                        km.MultiValued("similar", shares_embedding_with="hist")]).adapt(data)
    assert spec["hist"].num_ids == 10 and spec["similar"].num_ids is None
    kept = FeatureSpec([km.Sequence("hist", num_ids=50)]).adapt(data)
    assert kept["hist"].num_ids == 50  # given: kept


def test_adapt_refuses_bad_lists_and_vectors_with_column_and_row():
    bad_id = pd.DataFrame({"hist": [[1], [2, 2.5]]}, index=["a", "b"])
    with pytest.raises(ValueError, match="Sequence feature 'hist' at row 'b': id 2.5 is not an integer"):
        FeatureSpec([km.Sequence("hist")]).adapt(bad_id)
    not_a_list = pd.DataFrame({"hist": [[1], "1,2"]})
    with pytest.raises(ValueError, match="'hist' at row 1: got str '1,2'; expected a list"):
        FeatureSpec([km.Sequence("hist")]).adapt(not_a_list)
    infinite = pd.DataFrame({"v": [[1.0, 2.0], [np.inf, 0.0], [np.nan, 1.0]]}, index=[10, 11, 12])
    with pytest.raises(ValueError, match=r"Vector feature 'v' at row 11: value inf at position 0 "
                                         r"\(2 of 3 rows"):
        FeatureSpec([km.Vector("v", dim=2)]).adapt(infinite)
    short = pd.DataFrame({"v": [[1.0, 2.0], [1.0]]})
    with pytest.raises(ValueError, match="'v' at row 1: got 1 values; expected a list .* of 2"):
        FeatureSpec([km.Vector("v", dim=2)]).adapt(short)
