"""The feature spec: streaming fit, exact encodings, unknowns and nulls, JSON round trip."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from components.data.features import FeatureRoles, FeatureSpec
from components.errors import DataError


def _table() -> pa.Table:
    return pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "x": [1.0, 2.0, None, 3.0],
            "n": pa.array([1, 2, 3, 4], pa.int64()),
            "color": ["red", "blue", "red", None],
            "at": pa.array(
                [
                    dt.datetime(2024, 1, 1, 6),
                    dt.datetime(2024, 1, 3),
                    None,
                    dt.datetime(2024, 2, 1),
                ],
                pa.timestamp("s"),
            ),
            "y": [0, 1, 0, 1],
        }
    )


def test_roles_are_inferred_from_types_without_id_and_target() -> None:
    roles = FeatureRoles(id_column="id", target="y").resolve(_table().schema)
    assert roles == {"numeric": ["x", "n"], "categorical": ["color"], "timestamp": ["at"]}


def test_explicit_roles_are_checked_against_the_data() -> None:
    schema = _table().schema
    roles = FeatureRoles(id_column="id", target="y", categorical=["n", "color"]).resolve(schema)
    assert roles["categorical"] == ["n", "color"]
    assert roles["numeric"] == ["x"]
    with pytest.raises(DataError, match=r"features.numeric names column 'nope'.*available"):
        FeatureRoles(id_column="id", target="y", numeric=["nope"]).resolve(schema)
    with pytest.raises(DataError, match=r"column 'color' of type string, which cannot be used"):
        FeatureRoles(id_column="id", target="y", numeric=["color"]).resolve(schema)


def test_fit_and_transform_give_known_numbers() -> None:
    spec = FeatureSpec.fit(_table(), FeatureRoles("id", "y"), max_categories=5)
    x, n = spec.numeric
    assert (x.mean, x.std) == pytest.approx((2.0, np.sqrt(2 / 3)))  # null ignored
    assert (n.mean, n.std) == pytest.approx((2.5, np.sqrt(1.25)))
    assert spec.categorical[0].vocabulary == ("red", "blue")  # by frequency
    assert spec.feature_names == [
        "x",
        "n",
        "color=red",
        "color=blue",
        "color=__other__",
        "at.hour_sin",
        "at.hour_cos",
        "at.day_of_week_sin",
        "at.day_of_week_cos",
        "at.month_sin",
        "at.month_cos",
        "at.days",
    ]
    features = spec.transform(_table())
    assert features.dtype == np.float32
    assert features.shape == (4, 12)
    np.testing.assert_allclose(features[:, 0], [-1.2247449, 0.0, 0.0, 1.2247449], rtol=1e-6)
    np.testing.assert_array_equal(features[:, 2:5], [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]])
    # 2024-01-01 06:00 is a Monday (day 0) in January at hour 6: sin(2*pi*6/24) = 1.
    np.testing.assert_allclose(features[0, 5:11], [1, 0, 0, 1, 0.5, np.sqrt(3) / 2], atol=1e-6)
    np.testing.assert_array_equal(features[2, 5:12], 0.0)  # null timestamp: no signal, mean day


def test_unknown_categories_and_nulls_go_to_the_other_slot() -> None:
    spec = FeatureSpec.fit(_table(), FeatureRoles("id", "y"), max_categories=5)
    scoring = pa.table(
        {
            "x": pa.array([None, 5.0]),
            "n": pa.array([2, 3]),
            "color": ["green", None],
            "at": pa.array([None, None], pa.timestamp("s")),
        }
    )
    features = spec.transform(scoring)
    np.testing.assert_array_equal(features[:, 2:5], [[0, 0, 1], [0, 0, 1]])
    assert features[0, 0] == 0.0  # null -> mean -> 0 after standardising
    assert np.isfinite(features).all()


def test_vocabulary_keeps_the_most_frequent_values_ties_by_value() -> None:
    table = pa.table({"c": ["b", "a", "c", "c", "b", "a", "d"], "y": [0] * 7})
    spec = FeatureSpec.fit(table, FeatureRoles(None, "y"), max_categories=2)
    assert spec.categorical[0].vocabulary == ("a", "b")
    features = spec.transform(pa.table({"c": ["c", "a"]}))
    np.testing.assert_array_equal(features, [[0, 0, 1], [1, 0, 0]])


def test_streaming_fit_matches_a_single_batch_fit() -> None:
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "v": rng.normal(1000.0, 3.0, 10_000),
            "c": rng.choice(["p", "q", "r"], 10_000),
            "y": rng.integers(0, 2, 10_000),
        }
    )
    whole = FeatureSpec.fit(table.combine_chunks(), FeatureRoles(None, "y"))
    streamed = FeatureSpec.fit(
        table.to_batches(max_chunksize=333), FeatureRoles(None, "y"), schema=table.schema
    )
    assert streamed.categorical == whole.categorical
    assert streamed.numeric[0].mean == pytest.approx(whole.numeric[0].mean, rel=1e-12)
    assert streamed.numeric[0].std == pytest.approx(whole.numeric[0].std, rel=1e-9)
    assert streamed.numeric[0].std == pytest.approx(np.std(table["v"].to_numpy()), rel=1e-9)


def test_json_round_trip_keeps_the_version_and_detects_edits() -> None:
    spec = FeatureSpec.fit(_table(), FeatureRoles("id", "y"))
    text = spec.to_json()
    again = FeatureSpec.from_json(text)
    assert again == spec
    assert json.loads(text)["version"] == spec.version == again.version
    edited = json.loads(text)
    edited["numeric"][0]["mean"] = 99.0
    with pytest.raises(DataError, match=r"content hashes to .*re-run etl"):
        FeatureSpec.from_dict(edited)


def test_transform_names_missing_columns() -> None:
    spec = FeatureSpec.fit(_table(), FeatureRoles("id", "y"))
    with pytest.raises(DataError, match=r"columns \['at'\] required by feature spec"):
        spec.transform(_table().drop_columns(["at"]))
