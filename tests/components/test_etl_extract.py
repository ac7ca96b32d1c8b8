"""ETL extract: every input format, globs, file:// and S3 URIs, and quarantined bad rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from components import etl
from components.data.features import load_feature_spec
from components.errors import DataError, PermanentError
from tests.support.params import additions, etl_params, override

HEADER = "id,amount,kind,at,label"
OUTPUTS = ("dataset", "feature_spec", "scoring", "rejects", "quality")


def _rows(start: int, stop: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{i}",
            "amount": i % 17 * 1.5,
            "kind": "abc"[i % 3],
            "at": f"2024-0{i % 9 + 1}-1{i % 10}T0{i % 10}:30:00",
            "label": i % 2,
        }
        for i in range(start, stop)
    ]


def _csv_lines(rows: list[dict[str, Any]], sep: str = ",") -> list[str]:
    return [sep.join(str(r[c]) for c in HEADER.split(",")) for r in rows]


def _write_csv(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


#: The columns of :data:`HEADER`, a 60/20/20 split and two scoring shards.
BASE = (
    "data.id_column=id",
    "data.target=label",
    "data.split.train=0.6",
    "data.split.validation=0.2",
    "data.split.test=0.2",
    "inference.shards=2",
    "seed=3",
)


def _run(source: str | Path, out: Path, *overrides: str) -> dict[str, Any]:
    """Run etl on ``source`` into ``out`` with the composed params under ``overrides``."""
    params = etl_params(*BASE, *overrides)
    return etl.run({"source": str(source)}, params, {n: str(out / n) for n in OUTPUTS})


def _ids(out: Path) -> list[str]:
    return sorted(pq.read_table(out / "scoring", columns=["id"]).column(0).to_pylist())


def _rejects(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out / "rejects" / "rejects.parquet").to_pylist()


EXPECTED = sorted(f"r{i}" for i in range(60))


def test_csv_options_delimiter_quotes_and_no_header(tmp_path: Path) -> None:
    lines = [line.replace(",", ";").replace(";a;", ";'a;x';") for line in _csv_lines(_rows(0, 60))]
    source = tmp_path / "in.csv"
    source.write_text("\n".join(lines) + "\n")
    metrics = _run(
        source,
        tmp_path / "out",
        override("data.csv.delimiter", ";"),
        override("data.csv.quote_char", "'"),
        "data.csv.header=false",
        override("data.csv.column_names", HEADER.split(",")),
    )
    assert metrics["rows"] == 60 and metrics["rows_rejected"] == 0
    assert _ids(tmp_path / "out") == EXPECTED
    kinds = set(pq.read_table(tmp_path / "out" / "scoring", columns=["kind"])["kind"].to_pylist())
    assert kinds == {"a;x", "b", "c"}


def test_jsonl_parquet_file_parquet_directory_and_glob_give_the_same_rows(tmp_path: Path) -> None:
    rows = _rows(0, 60)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "in.parquet")
    (tmp_path / "pq").mkdir()
    pq.write_table(table.slice(0, 25), tmp_path / "pq" / "a.parquet")
    pq.write_table(table.slice(25), tmp_path / "pq" / "b.parquet")
    (tmp_path / "many").mkdir()
    for k in range(3):
        _write_csv(tmp_path / "many" / f"part{k}.csv", _csv_lines(rows[k * 20 : k * 20 + 20]))
    _write_csv(tmp_path / "many" / "other.csv", _csv_lines(_rows(100, 110)))
    sources = {
        "jsonl": tmp_path / "in.jsonl",
        "parquet": tmp_path / "in.parquet",
        "dir": tmp_path / "pq",
        "glob": tmp_path / "many" / "part*.csv",
        "file_uri": f"file://{tmp_path / 'many'}/part*.csv",
    }
    specs = []
    for name, source in sources.items():
        out = tmp_path / f"out-{name}"
        assert _run(source, out)["rows"] == 60, name
        assert _ids(out) == EXPECTED, name
        manifest = json.loads((out / "dataset" / "_manifest.json").read_text())
        assert ["amount", "double"] in manifest["schema"], name
        specs.append(load_feature_spec(str(out / "feature_spec")))
    # Same rows and types: the same fitted spec from every format (up to float rounding of
    # moments merged over different batch boundaries).
    for spec in specs[1:]:
        assert spec.feature_names == specs[0].feature_names
        assert spec.categorical == specs[0].categorical
        assert spec.numeric[0].mean == pytest.approx(specs[0].numeric[0].mean, rel=1e-12)
        assert spec.timestamp[0].days_std == pytest.approx(specs[0].timestamp[0].days_std)


def test_malformed_csv_rows_are_quarantined_with_reason_and_exact_accounting(
    tmp_path: Path,
) -> None:
    lines = _csv_lines(_rows(0, 60))
    lines[4] = "r4,1.5,a"  # wrong field count: line 6 (header is line 1)
    lines[9] = "r9,abc,a,2024-01-01T00:00:00,1"  # not a number
    lines[19] = "r19,2.5,b,yesterday,0"  # not a timestamp
    source = _write_csv(tmp_path / "in.csv", lines)
    out = tmp_path / "out"
    metrics = _run(
        source,
        out,
        *additions("data.columns", {"amount": "float64", "at": "timestamp[s]"}),
        "etl.max_reject_fraction=0.1",
    )
    assert (metrics["rows_in"], metrics["rows"], metrics["rows_rejected"]) == (60, 57, 3)
    rejects = {r["record"].split(",")[0].strip('{"id: '): r for r in _rejects(out)}
    assert rejects["r4"]["line"] == 6
    assert rejects["r4"]["reason"] == "expected 5 fields, found 3"
    assert rejects["r9"]["row"] == 9  # the 9th record read (r4's line is not a record)
    assert rejects["r9"]["reason"] == "column 'amount': cannot parse 'abc' as double"
    assert rejects["r19"]["reason"] == "column 'at': cannot parse 'yesterday' as timestamp[s]"
    assert {r["source"] for r in rejects.values()} == {str(source)}
    manifest = json.loads((out / "dataset" / "_manifest.json").read_text())
    assert (manifest["rows_in"], manifest["rows"], manifest["rows_rejected"]) == (60, 57, 3)
    assert sum(manifest["splits"].values()) == 57
    reject_manifest = json.loads((out / "rejects" / "_manifest.json").read_text())
    assert reject_manifest["rows"] == 3
    assert _ids(out) == sorted(set(EXPECTED) - {"r4", "r9", "r19"})


def test_malformed_jsonl_lines_are_quarantined(tmp_path: Path) -> None:
    text = [json.dumps(r) for r in _rows(0, 30)]
    text[3] = '{"id": "r3", "amount": '  # truncated JSON
    text[7] = json.dumps(_rows(7, 8)[0] | {"amount": "lots"})  # a string for a number
    (tmp_path / "in.jsonl").write_text("\n".join(text) + "\n")
    out = tmp_path / "out"
    metrics = _run(tmp_path / "in.jsonl", out, "etl.max_reject_fraction=0.1")
    assert (metrics["rows_in"], metrics["rows"], metrics["rows_rejected"]) == (30, 28, 2)
    by_line = {r["line"]: r["reason"] for r in _rejects(out)}
    assert sorted(by_line) == [4, 8]
    assert by_line[4].startswith("invalid JSON")
    assert "amount" in by_line[8]


def test_too_many_rejects_fail_with_the_first_reason(tmp_path: Path) -> None:
    lines = _csv_lines(_rows(0, 20))
    lines[2] = "r2,x,a,2024-01-01T00:00:00,0"
    lines[3] = "r3,y,a,2024-01-01T00:00:00,0"
    source = _write_csv(tmp_path / "in.csv", lines)
    with pytest.raises(DataError) as error:
        _run(
            source,
            tmp_path / "out",
            *additions("data.columns", {"amount": "float64"}),
            "etl.max_reject_fraction=0.05",
        )
    assert str(error.value) == (
        "2 of 20 rows (10.00%) could not be read, more than max_reject_fraction=0.05; first: "
        f"{source} row 3: column 'amount': cannot parse 'x' as double; fix the source or "
        f"raise etl.max_reject_fraction (see {tmp_path / 'out' / 'rejects' / 'rejects.parquet'})"
    )
    assert not (tmp_path / "out" / "dataset" / "_manifest.json").exists()
    assert len(_rejects(tmp_path / "out")) == 2


def test_s3_glob_source_through_a_local_s3_server(
    tmp_path: Path, s3_server: dict[str, Any]
) -> None:
    fs = pafs.S3FileSystem(**s3_server)
    fs.create_dir("raw-data")
    rows = _rows(0, 60)
    for k in range(3):
        lines = _csv_lines(rows[k * 20 : k * 20 + 20])
        with fs.open_output_stream(f"raw-data/in/part-{k}.csv") as f:
            f.write(("\n".join([HEADER, *lines]) + "\n").encode())
    storage = {k: v for k, v in s3_server.items() if k != "allow_bucket_creation"}
    out = tmp_path / "out"
    metrics = _run("s3://raw-data/in/part-*.csv", out, *additions("data.storage_options", storage))
    assert metrics["rows"] == 60
    assert _ids(out) == EXPECTED
    with pytest.raises(DataError, match=r"s3://raw-data/none/\*.csv matches no"):
        _run(
            "s3://raw-data/none/*.csv",
            tmp_path / "out2",
            *additions("data.storage_options", storage),
        )


def _latin1_rows(count: int) -> str:
    """Semicolons, decimal commas and accented names: a European spreadsheet export."""
    lines = [f"r{i};Müller-{i};{i},5;{i % 2}" for i in range(count)]
    return "\n".join(["id;name;amount;label", *lines]) + "\n"


def test_a_latin1_csv_is_a_data_error_naming_the_encoding_option(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes(_latin1_rows(60).encode("latin-1"))
    with pytest.raises(DataError, match=r"export.csv is not valid utf-8 text .*data.csv.encoding"):
        _run(source, tmp_path / "out", "data.csv.delimiter=';'")
    assert isinstance(DataError("x"), PermanentError)  # the runner never retries it


def test_encoding_and_decimal_point_read_a_european_export(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes(_latin1_rows(60).encode("latin-1"))
    out = tmp_path / "out"
    metrics = _run(
        source,
        out,
        "data.csv.delimiter=';'",
        "data.csv.encoding=latin-1",
        "data.csv.decimal_point=','",
    )
    assert (metrics["rows"], metrics["rows_rejected"]) == (60, 0)
    table = pq.read_table(out / "scoring").sort_by("id")
    assert table.schema.field("amount").type == pa.float64()
    first = table.filter(pa.compute.equal(table["id"], "r7")).to_pylist()[0]
    assert (first["name"], first["amount"]) == ("Müller-7", 7.5)


def test_decimal_commas_read_as_text_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "export.csv"
    source.write_text(_latin1_rows(60))
    with caplog.at_level("WARNING", logger="components.data.casting"):
        _run(source, tmp_path / "out", "data.csv.delimiter=';'")
    schema = pq.read_schema(tmp_path / "out" / "scoring" / "shard-00000.parquet")
    assert schema.field("amount").type == pa.string()  # what was asked for, but said so
    assert "column 'amount' holds numbers written with decimal commas" in caplog.text
    assert "data.csv.decimal_point=','" in caplog.text


def test_jsonl_lines_that_are_not_utf8_are_quarantined(tmp_path: Path) -> None:
    lines = [json.dumps(r).encode() for r in _rows(0, 30)]
    lines[5] = lines[5].replace(b'"c"', '"ç"'.encode("latin-1"))
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    metrics = _run(source, out, "etl.max_reject_fraction=0.1")
    assert (metrics["rows_in"], metrics["rows"], metrics["rows_rejected"]) == (30, 29, 1)
    (reject,) = _rejects(out)
    assert (reject["line"], reject["reason"]) == (
        6,
        "not valid UTF-8 text (JSON Lines files are UTF-8)",
    )
