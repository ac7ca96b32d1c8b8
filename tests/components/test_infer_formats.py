"""Scoring-only runs read every etl input format, from local paths and object stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from components import infer, publish
from components.errors import DataError
from tests.support.params import override, step_params

from .helpers import Pipeline

ID = "customer_id"


@pytest.fixture(scope="module")
def rows(pipeline: Pipeline) -> pa.Table:
    """The first scoring shard's rows (raw columns, string ids), timestamps in seconds as
    CSV and JSON text parse them."""
    table = pq.read_table(pipeline.scoring / "shard-00000.parquet")
    index = table.schema.get_field_index("signup_at")
    return table.set_column(index, "signup_at", table["signup_at"].cast(pa.timestamp("s")))


def _text(value: Any) -> str:
    if value is None:
        return ""  # CSV's null
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _csv(table: pa.Table, path: Path, *, sep: str = ",", header: bool = True) -> Path:
    lines = [sep.join(table.column_names)] if header else []
    lines += [sep.join(_text(v) for v in row.values()) for row in table.to_pylist()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _jsonl(table: pa.Table, path: Path) -> Path:
    records = [
        {k: _text(v) if k == "signup_at" else v for k, v in row.items()}
        for row in table.to_pylist()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _with(params: dict[str, Any], **values: Any) -> dict[str, Any]:
    """``params`` with run-time ``values`` for keys the composed params already hold."""
    assert values.keys() <= params.keys(), sorted(values.keys() - params.keys())
    return params | values


def _scoring_only(model: str, data: str, shards: int, *overrides: str) -> tuple[str, ...]:
    """The overrides of a scoring-only run (``stages=[infer]``) of ``model`` over ``data`` in
    ``shards`` shards, keyed by :data:`ID`."""
    return (
        "stages=[infer]",
        override("inference.model_uri", model),
        override("inference.data_uri", data),
        f"inference.shards={shards}",
        override("data.id_column", ID),
        *overrides,
    )


def _storage(options: dict[str, Any]) -> tuple[str, ...]:
    """``data.storage_options`` (which reach outside data and an outside model) = ``options``."""
    return tuple(override(f"+data.storage_options.{k}", v) for k, v in options.items())


def _infer_params(model: str, data: str, shards: int, shard: int, *overrides: str) -> dict:
    """Branch ``shard`` of the scoring-only run's infer step, 256 rows a batch, run ``r``."""
    composed = step_params(
        "infer",
        *_scoring_only(model, data, shards, "inference.batch_size=256", *overrides),
        item=shard,
    )
    return _with(composed, run_id="r")


def _score(
    model: str, data: str, shards: int, out: Path, *overrides: str
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Score ``data`` in ``shards`` shards; return the predictions sorted by id and each
    shard's metrics."""
    metrics = [
        infer.run(
            {"scoring": data, "model": model},
            _infer_params(model, data, shards, k, *overrides),
            {"predictions": str(out)},
        )
        for k in range(shards)
    ]
    parts = [pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))]
    return pa.concat_tables(parts).sort_by(ID), metrics


def _publish(model: str, data: str, out: Path, shards: int, *overrides: str) -> dict[str, Any]:
    """Publish the predictions in ``out`` of the scoring-only run, dated today."""
    params = step_params("publish", *_scoring_only(model, data, shards, *overrides))
    return publish.run(
        {"predictions": str(out), "scoring": data},
        _with(params, run_id="r", run_date=""),
        {"predictions": str(out.parent / f"{out.name}-published")},
    )


def _same(a: pa.Table, b: pa.Table) -> None:
    columns = [ID, "score", "label"]
    assert a.select(columns).equals(b.select(columns))


@pytest.fixture(scope="module")
def from_parquet(pipeline: Pipeline, rows: pa.Table, tmp_path_factory) -> pa.Table:
    root = tmp_path_factory.mktemp("parquet")
    pq.write_table(rows, root / "data.parquet", row_group_size=250)
    predictions, _ = _score(str(pipeline.model), str(root / "data.parquet"), 2, root / "out")
    return predictions


def test_parquet_csv_and_jsonl_give_identical_predictions(
    pipeline: Pipeline, rows: pa.Table, from_parquet: pa.Table, tmp_path: Path
) -> None:
    half = rows.num_rows // 2
    for name, write in (("csv", _csv), ("jsonl", _jsonl)):
        folder = tmp_path / name
        write(rows.slice(0, half), folder / f"a.{name}")
        write(rows.slice(half), folder / f"b.{name}")
        # three shards for two files: the third commits an empty file, typed like the others
        predictions, metrics = _score(str(pipeline.model), str(folder), 3, tmp_path / f"{name}-out")
        assert [m["rows"] for m in metrics] == [half, rows.num_rows - half, 0]
        assert [m["rejected"] for m in metrics] == [0, 0, 0]
        assert predictions.schema.field(ID).type == pa.string()
        _same(predictions, from_parquet)
        assert _publish(str(pipeline.model), str(folder), tmp_path / f"{name}-out", 3) == {
            "rows": rows.num_rows,
            "files": 3,
        }


def test_csv_options_and_declared_types_apply(
    pipeline: Pipeline, rows: pa.Table, from_parquet: pa.Table, tmp_path: Path
) -> None:
    data = _csv(rows, tmp_path / "in" / "export.txt", sep=";", header=False)
    lines = data.read_text().splitlines()
    fields = lines[600].split(";")
    fields[1] += ".0"  # an age such as "41.0": a float64, not an int64
    lines[600] = ";".join(fields)
    data.write_text("\n".join(lines) + "\n")
    model = str(pipeline.model)
    csv = (
        override("data.csv.delimiter", ";"),
        "data.csv.header=false",
        override("data.csv.column_names", rows.column_names),
    )
    declared = ("data.format=csv", *csv, "+data.columns.age=float64")
    predictions, metrics = _score(model, str(data), 2, tmp_path / "out", *declared)
    assert [m["rejected"] for m in metrics] == [0, 0]
    _same(predictions, from_parquet)
    assert _publish(model, str(data), tmp_path / "out", 2, *declared)["rows"] == rows.num_rows
    # undeclared, age is inferred as int64 from the first rows and "41.0" is rejected
    _, metrics = _score(
        model, str(data), 1, tmp_path / "inferred", *csv, "etl.max_reject_fraction=0.01"
    )
    assert metrics[0]["rejected"] == 1
    with pytest.raises(DataError, match=r"export.txt lacks columns \['customer_id'"):
        _score(model, str(data), 1, tmp_path / "default-options")


def test_scoring_data_and_model_from_s3(
    pipeline: Pipeline,
    rows: pa.Table,
    from_parquet: pa.Table,
    tmp_path: Path,
    s3_server: dict[str, Any],
) -> None:
    fs = pafs.S3FileSystem(**s3_server)
    fs.create_dir("scoring-in")
    pafs.copy_files(
        str(pipeline.model),
        "scoring-in/models/churn",
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=fs,
    )
    local = tmp_path / "local"
    for k in range(3):
        chunk = rows.slice(k * 200, 200 if k < 2 else None)
        fs.create_dir("scoring-in/day")
        with fs.open_output_stream(f"scoring-in/day/part-{k}.jsonl") as f:
            f.write(_jsonl(chunk, local / f"part-{k}.jsonl").read_bytes())
    storage = _storage({k: v for k, v in s3_server.items() if k != "allow_bucket_creation"})
    model, data = "s3://scoring-in/models/churn", "s3://scoring-in/day/part-*.jsonl"
    predictions, metrics = _score(model, data, 2, tmp_path / "out", *storage)
    _same(predictions, from_parquet)
    assert _publish(model, data, tmp_path / "out", 2, *storage)["rows"] == rows.num_rows
    # Parquet footers are read through the store: three equal contiguous ranges of rows
    with fs.open_output_stream("scoring-in/table/data.parquet") as f:
        pq.write_table(rows, f, row_group_size=250)
    table = "s3://scoring-in/table"
    from_table, ranges = _score(model, table, 3, tmp_path / "pq", *storage)
    _same(from_table, from_parquet)
    n = rows.num_rows
    assert [m["rows"] for m in ranges] == [n * (k + 1) // 3 - n * k // 3 for k in range(3)]
    assert _publish(model, table, tmp_path / "pq", 3, *storage)["rows"] == n
    # a re-run finds the committed shard for the same objects; a changed object is redone
    again = infer.run(
        {"scoring": data, "model": model},
        _infer_params(model, data, 2, 0, *storage),
        {"predictions": str(tmp_path / "out")},
    )
    assert again["reused"] == 1 and again["rows"] == metrics[0]["rows"]
    with fs.open_output_stream("scoring-in/day/part-0.jsonl") as f:
        f.write(_jsonl(rows.slice(0, 199), local / "short.jsonl").read_bytes())
    redone = infer.run(
        {"scoring": data, "model": model},
        _infer_params(model, data, 2, 0, *storage),
        {"predictions": str(tmp_path / "out")},
    )
    assert redone["reused"] == 0 and redone["rows"] == metrics[0]["rows"] - 1
    # an etl scoring set scored with a model from the store (stages=[etl,infer])
    etl_set = infer.run(
        {"scoring": str(pipeline.scoring), "model": model},
        _with(
            step_params(
                "infer", "stages=[etl,infer]", override("inference.model_uri", model), *storage
            ),
            run_id="r",
        ),
        {"predictions": str(tmp_path / "etl-set")},
    )
    assert etl_set["rows"] == rows.num_rows and etl_set["rejected"] == 0
    with pytest.raises(DataError, match=r"s3://scoring-in/nothing holds no model.json"):
        _score("s3://scoring-in/nothing", data, 1, tmp_path / "none", *storage)


@pytest.fixture
def damaged(rows: pa.Table, tmp_path: Path) -> Path:
    """The rows as two CSV files; the first has a row with an extra field (line 4) and a
    row whose age is not a number (line 7)."""
    half = rows.num_rows // 2
    first = _csv(rows.slice(0, half), tmp_path / "in" / "a.csv")
    lines = first.read_text().splitlines()
    lines[3] += ",surplus"
    lines[6] = lines[6].replace(f",{rows['age'][5].as_py()},", ",sixty,", 1)
    first.write_text("\n".join(lines) + "\n")
    _csv(rows.slice(half), tmp_path / "in" / "b.csv")
    return tmp_path / "in"


def test_unreadable_rows_are_quarantined_and_counted(
    pipeline: Pipeline, rows: pa.Table, damaged: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    predictions, metrics = _score(
        str(pipeline.model), str(damaged), 2, out, "etl.max_reject_fraction=0.01"
    )
    assert [m["rejected"] for m in metrics] == [2, 0]
    assert predictions.num_rows == rows.num_rows - 2
    lost = set(rows[ID].to_pylist()) - set(predictions[ID].to_pylist())
    assert lost == {rows[ID][2].as_py(), rows[ID][5].as_py()}
    rejects = pq.read_table(out / "_rejects-00000.parquet").to_pylist()
    assert [(Path(r["source"]).name, r["line"], r["row"]) for r in rejects] == [
        ("a.csv", 4, None),
        ("a.csv", None, 5),
    ]
    assert (
        rejects[0]["reason"] == f"expected {rows.num_columns} fields, found {rows.num_columns + 1}"
    )
    assert rejects[1]["reason"].startswith("column 'age': cannot parse 'sixty' as int64")
    assert not (out / "_rejects-00001.parquet").exists()
    assert json.loads((out / "_shard-00000.json").read_text())["rejected"] == 2

    metrics = _publish(str(pipeline.model), str(damaged), out, 2)
    assert metrics == {"rows": rows.num_rows - 2, "files": 2, "rejected": 2}
    published = out.parent / "out-published"
    assert json.loads((published / "_manifest.json").read_text())["rejected"] == 2
    assert pq.read_metadata(published / "_rejects-00000.parquet").num_rows == 2

    quarantine = out / "_rejects-00000.parquet"
    pq.write_table(pq.read_table(quarantine).slice(0, 1), quarantine)
    with pytest.raises(DataError) as error:
        _publish(str(pipeline.model), str(damaged), out, 2)
    assert str(error.value) == (
        f"{quarantine} holds 1 rejected rows but the commit marker of shard 0 counts 2; the "
        "quarantine changed after inference committed it: re-run inference for that shard"
    )
    kept = pq.read_metadata(out / "part-00000.parquet").num_rows
    (out / "part-00001.parquet").unlink()
    with pytest.raises(DataError) as error:
        _publish(str(pipeline.model), str(damaged), out, 2)
    assert str(error.value) == (
        f"expected {rows.num_rows - 2} predictions (one per scoring row, 2 rows rejected), "
        f"found {kept}; missing shards: [1]: re-run inference for those shards"
    )


def test_too_many_unreadable_rows_fail_the_shard(
    pipeline: Pipeline, rows: pa.Table, damaged: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    half = rows.num_rows // 2
    with pytest.raises(DataError) as error:
        infer.run(
            {"scoring": str(damaged), "model": str(pipeline.model)},
            _with(
                step_params("infer", *_scoring_only(str(pipeline.model), str(damaged), 2)),
                run_id="r",
            ),
            {"predictions": str(out)},
        )
    assert str(error.value) == (
        f"2 of {half} rows ({2 / half:.2%}) could not be read, more than "
        f"max_reject_fraction=0.0; first: {damaged / 'a.csv'} line 4: expected "
        f"{rows.num_columns} fields, found {rows.num_columns + 1}; fix the source or raise "
        f"etl.max_reject_fraction (see {out / '_rejects-00000.parquet'})"
    )
    assert not (out / "part-00000.parquet").exists() and not (out / "_shard-00000.json").exists()
    assert pq.read_metadata(out / "_rejects-00000.parquet").num_rows == 2
