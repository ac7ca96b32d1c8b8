"""ETL: hash splits and shards, stability under appends, manifests, validation errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components import etl
from components.data import writers
from components.data.features import load_feature_spec
from components.errors import DataError, ParamError
from pipelines.errors import ConfigError
from tests.support.params import etl_params

from .helpers import Pipeline, write_csv

HEADER = "id,amount,kind,at,label"


def _rows(start: int, stop: int) -> list[str]:
    return [
        f"r{i},{i % 17 * 1.5},{'abc'[i % 3]},2024-0{i % 9 + 1}-1{i % 10}T0{i % 10}:30:00,{i % 2}"
        for i in range(start, stop)
    ]


#: The columns of :data:`HEADER`'s rows.
COLUMNS = ("data.id_column=id", "data.target=label")
#: An etl-only run that puts every row in the train split.
TRAIN_ONLY = (
    "stages=[etl]",
    "data.split.train=1.0",
    "data.split.validation=0.0",
    "data.split.test=0.0",
)


def _run(
    source: Path, out: Path, *overrides: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run etl on ``source`` into ``out`` with the composed params under ``overrides``."""
    if params is None:
        params = etl_params(*COLUMNS, *overrides)
    return etl.run(
        {"source": str(source)},
        params,
        {
            "dataset": str(out / "dataset"),
            "feature_spec": str(out / "spec"),
            "scoring": str(out / "scoring"),
        },
    )


def _assignments(out: Path, column: str = "id") -> dict[str, str]:
    """Map each id to the split or scoring shard file it landed in."""
    where = {}
    paths = [*(out / "dataset").glob("*/*.parquet"), *(out / "scoring").glob("*.parquet")]
    for path in sorted(paths):
        for value in pq.read_table(path, columns=[column])[column].to_pylist():
            key = f"{path.parent.name}/{path.name}"
            where.setdefault(value, []).append(key)
    return {k: ",".join(v) for k, v in where.items()}


def _files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path, with its bytes."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_manifests_count_splits_and_every_row_in_one_shard(pipeline: Pipeline) -> None:
    manifest = json.loads((pipeline.dataset / "_manifest.json").read_text())
    scoring = json.loads((pipeline.scoring / "_manifest.json").read_text())
    assert manifest["rows"] == scoring["rows"] == 4000 == pipeline.etl_metrics["rows"]
    assert sum(manifest["splits"].values()) == 4000
    assert sum(scoring["shards"]) == 4000
    assert "shards" not in manifest
    assert manifest["id_column"] == scoring["id_column"] == "customer_id"
    assert manifest["schema"] == scoring["schema"]
    assert manifest["seed"] == scoring["seed"] == 7
    assert sorted(p.name for p in pipeline.dataset.iterdir()) == [
        "_manifest.json",
        "test",
        "train",
        "validation",
    ]
    assert manifest["feature_spec_version"] == load_feature_spec(str(pipeline.feature_spec)).version
    assert ["signup_at", "timestamp[s]"] in manifest["schema"]
    for split, expected in {"train": 0.7, "validation": 0.15, "test": 0.15}.items():
        assert abs(manifest["splits"][split] / 4000 - expected) < 0.03
        assert (
            pq.read_metadata(pipeline.dataset / split / "part-00000.parquet").num_rows
            == (manifest["splits"][split])
        )
    ids = []
    for shard, count in enumerate(scoring["shards"]):
        table = pq.read_table(pipeline.scoring / f"shard-{shard:05d}.parquet")
        assert table.num_rows == count > 1000
        ids += table["customer_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 4000


def test_floats_skip_dictionary_encoding_and_row_groups_are_buffered(pipeline: Pipeline) -> None:
    metadata = pq.read_metadata(pipeline.dataset / "train" / "part-00000.parquet")
    assert metadata.num_row_groups == 1  # batch_rows=1000 batches buffered into one group
    names = metadata.schema.names
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    for plain in ("monthly_charges", "customer_id"):  # a float and the (unique) id column
        chunk = metadata.row_group(0).column(names.index(plain))
        assert not dictionary & set(chunk.encodings), plain
    chunk = metadata.row_group(0).column(names.index("plan"))
    assert dictionary & set(chunk.encodings)


def test_rows_keep_their_split_and_shard_when_rows_are_appended(tmp_path: Path) -> None:
    write_csv(tmp_path / "small.csv", HEADER, _rows(0, 600))
    (tmp_path / "more").mkdir()
    write_csv(tmp_path / "more" / "a.csv", HEADER, _rows(0, 600))
    write_csv(tmp_path / "more" / "b.csv", HEADER, _rows(600, 1500))
    _run(tmp_path / "small.csv", tmp_path / "one")
    _run(tmp_path / "more", tmp_path / "two")
    before = _assignments(tmp_path / "one")
    after = _assignments(tmp_path / "two")
    assert len(after) == 1500
    assert {k: after[k] for k in before} == before
    assert all(v.count("scoring/") == 1 and v.count(",") == 1 for v in after.values())


def test_running_twice_gives_identical_bytes(tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv", HEADER, _rows(0, 500))
    _run(tmp_path / "data.csv", tmp_path / "a")
    _run(tmp_path / "data.csv", tmp_path / "b")
    files = _files(tmp_path / "a")
    assert len(files) == 3 + 3 + 2 + 1  # splits, shards, two manifests, spec
    assert files == _files(tmp_path / "b")
    assert not list(tmp_path.rglob("*.tmp"))


def test_shard_count_changes_only_the_scoring_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small budget forces early flushes, as many shards do on big inputs; with this one,
    # flushing split writers too would give different row groups for 2 and 3 shards.
    monkeypatch.setattr(writers, "PENDING_ROWS_BUDGET", 330)
    (tmp_path / "source").mkdir()
    for k in range(3):  # one record batch per file
        write_csv(tmp_path / "source" / f"{k}.csv", HEADER, _rows(200 * k, 200 * (k + 1)))
    _run(tmp_path / "source", tmp_path / "two", "inference.shards=2")
    _run(tmp_path / "source", tmp_path / "three", "inference.shards=3")
    dataset = _files(tmp_path / "two" / "dataset")
    assert sorted(dataset) == [
        "_manifest.json",
        "test/part-00000.parquet",
        "train/part-00000.parquet",
        "validation/part-00000.parquet",
    ]
    assert dataset == _files(tmp_path / "three" / "dataset")
    assert _files(tmp_path / "two" / "spec") == _files(tmp_path / "three" / "spec")
    two, three = _files(tmp_path / "two" / "scoring"), _files(tmp_path / "three" / "scoring")
    assert len(two) == 2 + 1 and len(three) == 3 + 1
    assert (
        json.loads(two["_manifest.json"])["shards"] != json.loads(three["_manifest.json"])["shards"]
    )
    assert sum(json.loads(three["_manifest.json"])["shards"]) == 600


def test_without_an_id_column_whole_rows_are_hashed(tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv", HEADER, _rows(0, 300))
    metrics = _run(tmp_path / "data.csv", tmp_path / "out", "stages=[etl]", "data.id_column=null")
    assert metrics["rows"] == 300
    manifest = json.loads((tmp_path / "out" / "dataset" / "_manifest.json").read_text())
    assert manifest["id_column"] is None
    spec = load_feature_spec(str(tmp_path / "out" / "spec"))
    assert [c.name for c in spec.categorical] == ["id", "kind"]  # a plain string column now


def test_drop_removes_columns_from_dataset_and_features(tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv", HEADER, _rows(0, 200))
    _run(tmp_path / "data.csv", tmp_path / "out", "features.drop=[at]")
    schema = pq.read_schema(tmp_path / "out" / "scoring" / "shard-00000.parquet")
    assert "at" not in schema.names
    assert load_feature_spec(str(tmp_path / "out" / "spec")).timestamp == ()


def test_empty_shards_still_exist_with_the_schema(tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv", HEADER, _rows(0, 3))
    _run(tmp_path / "data.csv", tmp_path / "out", *TRAIN_ONLY, "inference.shards=8")
    shards = sorted((tmp_path / "out" / "scoring").glob("shard-*.parquet"))
    assert len(shards) == 8
    assert sum(pq.read_metadata(p).num_rows for p in shards) == 3
    assert all(pq.read_schema(p).names == HEADER.split(",") for p in shards)


def test_missing_target_names_the_available_columns(tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv", HEADER, _rows(0, 10))
    with pytest.raises(DataError) as error:
        _run(tmp_path / "data.csv", tmp_path / "out", "data.target=churn")
    assert str(error.value) == (
        f"target 'churn' is not a column of {tmp_path / 'data.csv'}; available columns: "
        "['id', 'amount', 'kind', 'at', 'label']; set target to one of them"
    )
    assert not (tmp_path / "out" / "dataset" / "_manifest.json").exists()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            ["r1,1,a,2024-01-01T00:00:00,0", ",2,b,2024-01-01T00:00:00,1"],
            r"id column 'id' is empty in 1 rows \(first at data row 2\)",
        ),
        (
            ["r1,1,a,2024-01-01T00:00:00,0", "r1,2,b,2024-01-01T00:00:00,1"],
            r"id column 'id' has 1 repeated values; ids must be unique",
        ),
    ],
)
def test_bad_ids_are_data_errors(tmp_path: Path, rows: list[str], message: str) -> None:
    write_csv(tmp_path / "data.csv", HEADER, rows)
    with pytest.raises(DataError, match=message):
        _run(tmp_path / "data.csv", tmp_path / "out", *TRAIN_ONLY)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("data.split.train=0.5", "data.split.validation=0.2"),
            r"data.split: expected train \+ validation \+ test = 1",
        ),
        (("+data.split.holdout=0.2",), r"data.split.holdout: expected one of the keys"),
        (("inference.shards=0",), r"inference.shards: expected a number >= 1, got 0"),
        (("data.format=json",), r"data.format: expected one of 'auto', 'csv'"),
        (("data.target=null",), r"data.target: expected a value of the declared type"),
    ],
)
def test_bad_config_values_are_refused_at_composition(
    overrides: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        etl_params(*COLUMNS, *overrides)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["split"].update(holdout=0.2), r"etl.split: unknown key etl.split.holdout"),
        (lambda p: p.pop("target"), r"etl: missing key etl.target"),
        (lambda p: p.update(shards="3"), r"etl.shards: expected int, got '3'"),
    ],
)
def test_off_contract_params_are_param_errors(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    write_csv(tmp_path / "data.csv", HEADER, _rows(0, 10))
    params = etl_params(*COLUMNS)
    change(params)
    with pytest.raises(ParamError, match=message):
        _run(tmp_path / "data.csv", tmp_path / "out", params=params)


def test_missing_source_and_unparseable_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.csv matches no csv files; expected a file"):
        _run(tmp_path / "nope.csv", tmp_path / "out")
    write_csv(tmp_path / "bad.csv", HEADER, [*_rows(0, 5), "r9,1,a"])
    with pytest.raises(
        DataError,
        match=r"1 of 6 rows \(16.67%\) could not be read, more than max_reject_fraction=0.0; "
        r"first: .*bad.csv line 7: expected 5 fields, found 3",
    ):
        _run(tmp_path / "bad.csv", tmp_path / "out2")
    assert not (tmp_path / "out2" / "dataset" / "_manifest.json").exists()


def test_delimiter_is_honoured(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "data.csv", HEADER.replace(",", ";"), [r.replace(",", ";") for r in _rows(0, 50)]
    )
    metrics = _run(tmp_path / "data.csv", tmp_path / "out", "data.csv.delimiter=';'")
    assert metrics["rows"] == 50
    schema = pq.read_schema(tmp_path / "out" / "dataset" / "train" / "part-00000.parquet")
    assert schema.field("amount").type == pa.float64()


def test_sample_rows_reads_only_the_first_rows(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,x,y\n" + "".join(f"r{i},{i},{i % 2}\n" for i in range(500)))
    out = tmp_path / "out"
    params = etl_params(
        "data.id_column=id",
        "data.target=y",
        "inference.shards=2",
        "data.sample_rows=120",
        "data.split.train=0.6",
        "data.split.validation=0.2",
        "data.split.test=0.2",
    )
    outputs = {n: str(out / n) for n in ("dataset", "feature_spec", "scoring")}
    metrics = etl.run({"source": str(source)}, params, outputs)
    assert metrics["rows"] == 120
    ids = pq.read_table(out / "scoring", columns=["id"]).column(0).to_pylist()
    assert sorted(ids) == sorted(f"r{i}" for i in range(120))
