"""Sharded inference and its reduce step: exactly one prediction per scoring row, one model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from components import infer, publish
from components.errors import DataError, ParamError
from components.io.files import sha256_file
from pipelines.errors import ConfigError
from tests.support.params import override, step_params

from .helpers import Pipeline

SHARDS = 3
#: Scoring the etl scoring set 500 rows a batch, labels cut at 0.5.
SCORING = ("inference.batch_size=500", "inference.threshold=0.5")


def _with(params: dict[str, Any], **values: Any) -> dict[str, Any]:
    """``params`` with run-time ``values`` for keys the composed params already hold."""
    assert values.keys() <= params.keys(), sorted(values.keys() - params.keys())
    return params | values


def _infer_params(shard: int, *overrides: str, run_id: str = "run-1") -> dict[str, Any]:
    """Branch ``shard`` of the infer step over the etl scoring set, in run ``run_id``."""
    return _with(step_params("infer", *SCORING, *overrides, item=shard), run_id=run_id)


def _publish_params(*overrides: str, **values: Any) -> dict[str, Any]:
    """The publish step's params in run ``run-1``, dated today, with run-time ``values``."""
    runtime = {"run_id": "run-1", "run_date": ""} | values
    return _with(step_params("publish", *overrides), **runtime)


def _infer(pipeline: Pipeline, shard: int, out: Path, run_id: str = "run-1") -> dict[str, Any]:
    return infer.run(
        {"scoring": str(pipeline.scoring), "model": str(pipeline.model)},
        _infer_params(shard, run_id=run_id),
        {"predictions": str(out)},
    )


def _publish(pipeline: Pipeline, predictions: list[Path], out: Path) -> dict[str, Any]:
    return publish.run(
        {"predictions": [str(p) for p in predictions], "scoring": str(pipeline.scoring)},
        _publish_params(),
        {"predictions": str(out)},
    )


def _rewrite(source: Path, directory: Path, column: str, values: list[Any]) -> Path:
    """Copy the one committed shard of ``source`` into ``directory`` with ``column`` replaced
    (and a commit marker that matches the new file)."""
    (part,) = source.glob("part-*.parquet")
    (marker,) = source.glob("_shard-*.json")
    table = pq.read_table(part)
    directory.mkdir()
    index = table.schema.get_field_index(column)
    field = table.schema.field(index)
    pq.write_table(
        table.set_column(index, field, pa.array(values, field.type)), directory / part.name
    )
    committed = json.loads(marker.read_text())
    committed["sha256"] = sha256_file(str(directory / part.name))
    (directory / marker.name).write_text(json.dumps(committed))
    return directory


@pytest.fixture(scope="module")
def shard_predictions(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("infer")
    dirs = []
    for shard in range(SHARDS):
        metrics = _infer(pipeline, shard, root / f"shard{shard}")
        assert metrics["rows"] > 0 and metrics["rows_per_s"] > 0
        dirs.append(root / f"shard{shard}")
    return dirs


def test_each_shard_writes_typed_predictions(shard_predictions: list[Path]) -> None:
    table = pq.read_table(shard_predictions[1] / "part-00001.parquet")
    constant = pa.dictionary(pa.int8(), pa.string())
    assert table.schema == pa.schema(
        [
            ("customer_id", pa.string()),
            ("score", pa.float32()),
            ("label", pa.dictionary(pa.int16(), pa.string())),
            ("model_version", constant),
            ("run_id", constant),
            ("scored_at", pa.timestamp("ms", tz="UTC")),
        ]
    )
    scores = table["score"].to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    labels = table["label"].cast(pa.string()).to_pylist()
    assert labels == ["1" if s >= 0.5 else "0" for s in scores]
    assert set(table["run_id"].cast(pa.string()).to_pylist()) == {"run-1"}
    marker = json.loads((shard_predictions[1] / "_shard-00001.json").read_text())
    assert marker["rows"] == table.num_rows and marker["file"] == "part-00001.parquet"


def test_publish_gives_one_prediction_per_id(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    metrics = _publish(pipeline, shard_predictions, tmp_path / "out")
    assert metrics == {"rows": 4000, "files": SHARDS}
    published = [
        value
        for part in sorted((tmp_path / "out").glob("part-*.parquet"))
        for value in pq.read_table(part, columns=["customer_id"])["customer_id"].to_pylist()
    ]
    raw = pacsv.read_csv(pipeline.raw / "data.csv")["customer_id"]
    assert sorted(published) == sorted(raw.to_pylist())
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    model_version = json.loads((pipeline.model / "model.json").read_text())["version"]
    assert manifest["model_version"] == model_version
    assert manifest["run_ids"] == ["run-1"]
    assert [f["name"] for f in manifest["files"]] == [f"part-{k:05d}.parquet" for k in range(3)]


def test_publish_accepts_shards_scored_by_a_resumed_run(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    # Run "run-0" scored shard 1 and was interrupted; "run-1" reused it and scored the rest.
    _infer(pipeline, 1, tmp_path / "shard1", run_id="run-0")
    mixed = [shard_predictions[0], tmp_path / "shard1", shard_predictions[2]]
    assert _publish(pipeline, mixed, tmp_path / "out") == {"rows": 4000, "files": SHARDS}
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["run_ids"] == ["run-0", "run-1"]
    assert "run_id" not in manifest
    shard1 = pq.read_table(tmp_path / "out" / "part-00001.parquet", columns=["run_id"])
    assert pc.unique(shard1["run_id"].cast(pa.string())).to_pylist() == ["run-0"]


def test_publish_refuses_mixed_model_versions(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    rows = pq.read_metadata(shard_predictions[2] / "part-00002.parquet").num_rows
    other = _rewrite(shard_predictions[2], tmp_path / "other", "model_version", ["0" * 16] * rows)
    version = json.loads((pipeline.model / "model.json").read_text())["version"]
    with pytest.raises(DataError) as error:
        _publish(pipeline, [*shard_predictions[:2], other], tmp_path / "out")
    assert str(error.value) == (
        f"predictions mix model versions {sorted(['0' * 16, version])}; re-run inference for "
        "every shard with one model"
    )
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_publish_refuses_a_missing_shard(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    manifest = json.loads((pipeline.scoring / "_manifest.json").read_text())
    with pytest.raises(DataError) as error:
        _publish(pipeline, [shard_predictions[0], shard_predictions[2]], tmp_path / "out")
    found = 4000 - manifest["shards"][1]
    assert str(error.value) == (
        f"expected 4000 predictions (one per scoring row), found {found}; missing shards: [1]: "
        "re-run inference for those shards"
    )
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_publish_refuses_a_shard_scored_twice(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    shutil.copytree(shard_predictions[0], tmp_path / "copy")
    with pytest.raises(DataError, match=r"part-00000.parquet appears in both"):
        _publish(pipeline, [*shard_predictions, tmp_path / "copy"], tmp_path / "out")


def test_publish_refuses_repeated_ids(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    ids = pq.read_table(shard_predictions[0] / "part-00000.parquet")["customer_id"].to_pylist()
    ids[1] = ids[0]
    bad = _rewrite(shard_predictions[0], tmp_path / "bad", "customer_id", ids)
    with pytest.raises(DataError, match=r"part-00000.parquet holds repeated 'customer_id' values"):
        _publish(pipeline, [bad, *shard_predictions[1:]], tmp_path / "out")


def test_infer_reuses_a_committed_shard_and_redoes_a_changed_one(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    first = _infer(pipeline, 0, tmp_path)
    part = tmp_path / "part-00000.parquet"
    written = part.read_bytes()
    again = _infer(pipeline, 0, tmp_path, run_id="run-2")
    assert (first["reused"], again["reused"]) == (0, 1)
    assert again["rows"] == first["rows"] and part.read_bytes() == written
    columns = ["customer_id", "score", "label"]
    assert pq.read_table(part, columns=columns).equals(
        pq.read_table(shard_predictions[0] / part.name, columns=columns)
    )
    # A different threshold changes predictions, so the committed shard no longer matches.
    redone = infer.run(
        {"scoring": str(pipeline.scoring), "model": str(pipeline.model)},
        _infer_params(0, "inference.threshold=0.9", run_id="run-3"),
        {"predictions": str(tmp_path)},
    )
    assert redone["reused"] == 0
    assert set(pq.read_table(part)["run_id"].cast(pa.string()).to_pylist()) == {"run-3"}


def test_publish_refuses_a_shard_without_commit_marker(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    uncommitted = tmp_path / "shard1"
    uncommitted.mkdir()
    shutil.copy(shard_predictions[1] / "part-00001.parquet", uncommitted)
    with pytest.raises(DataError) as error:
        _publish(
            pipeline, [shard_predictions[0], uncommitted, shard_predictions[2]], tmp_path / "o"
        )
    assert str(error.value) == (
        f"{uncommitted / 'part-00001.parquet'} has no commit marker _shard-00001.json, so its "
        "shard never finished: re-run inference for that shard"
    )
    assert not (tmp_path / "o" / "_manifest.json").exists()


def test_infer_refuses_a_shard_out_of_range(pipeline: Pipeline, tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        infer.run(
            {"scoring": str(pipeline.scoring), "model": str(pipeline.model)},
            _with(_infer_params(0), shard=3),  # a branch the 3-shard fan-out does not have
            {"predictions": str(tmp_path)},
        )
    assert str(error.value) == (
        f"shard 3 is out of range: scoring set {pipeline.scoring} has 3 shards (0..2); "
        "fan inference out over exactly 3 shards"
    )


def test_infer_names_columns_the_model_needs(pipeline: Pipeline, tmp_path: Path) -> None:
    scoring = tmp_path / "scoring"
    shutil.copytree(pipeline.scoring, scoring)
    shard = scoring / "shard-00000.parquet"
    pq.write_table(pq.read_table(shard).drop_columns(["plan"]), shard)
    with pytest.raises(DataError, match=r"lacks columns \['plan'\]"):
        infer.run(
            {"scoring": str(scoring), "model": str(pipeline.model)},
            _infer_params(0, run_id="r"),
            {"predictions": str(tmp_path / "out")},
        )


def test_infer_needs_an_id_column(pipeline: Pipeline, tmp_path: Path) -> None:
    scoring = tmp_path / "scoring"
    shutil.copytree(pipeline.scoring, scoring)
    manifest = json.loads((scoring / "_manifest.json").read_text())
    (scoring / "_manifest.json").write_text(json.dumps(manifest | {"id_column": None}))
    with pytest.raises(DataError) as error:
        infer.run(
            {"scoring": str(scoring), "model": str(pipeline.model)},
            _with(step_params("infer"), run_id="r"),
            {"predictions": str(tmp_path / "out")},
        )
    assert str(error.value) == (
        f"scoring set {scoring} has no id column, so predictions cannot be keyed; "
        "re-run etl with id_column set"
    )


def test_publish_writes_versions_with_retention_and_loads_the_store(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    destination, url = tmp_path / "published", f"sqlite:///{tmp_path}/store.db"
    versions = (
        override("publish.destination", str(destination)),
        "publish.partition_by=run_id",
        "publish.retention=2",
        override("publish.store_url", url),
    )
    for run_id in ("run-a", "run-b", "run-c"):
        metrics = publish.run(
            {"predictions": [str(p) for p in shard_predictions], "scoring": str(pipeline.scoring)},
            _publish_params(*versions, run_id=run_id),
            {"predictions": str(tmp_path / f"out-{run_id}")},
        )
        assert metrics == {"rows": 4000, "files": SHARDS, "stored": 4000}
    assert sorted(p.name for p in destination.iterdir()) == ["run_id=run-b", "run_id=run-c"]
    manifest = json.loads((destination / "run_id=run-c" / "_manifest.json").read_text())
    assert manifest["rows"] == 4000 and manifest["run_ids"] == ["run-1"]
    output = json.loads((tmp_path / "out-run-c" / "_manifest.json").read_text())
    assert output["published_to"] == str(destination / "run_id=run-c")
    parts = sorted((destination / "run_id=run-c").glob("part-*.parquet"))
    assert sum(pq.read_metadata(p).num_rows for p in parts) == 4000

    from components.scoring.lookup import LookupStore

    first = pq.read_table(shard_predictions[0] / "part-00000.parquet").slice(0, 1).to_pylist()[0]
    store = LookupStore(url)
    (row,) = store.get(first["customer_id"])
    store.close()
    assert row["score"] == pytest.approx(first["score"])
    assert row["model_version"] == first["model_version"]
    assert row["run_id"] == "run-1"  # the run that scored it


def test_publish_partitions_by_the_run_date_param(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    destination = tmp_path / "published"
    inputs = {"predictions": [str(p) for p in shard_predictions], "scoring": str(pipeline.scoring)}
    dated = (override("publish.destination", str(destination)), "publish.partition_by=run_date")
    publish.run(
        inputs,
        _publish_params(*dated, run_date="2026-03-01"),
        {"predictions": str(tmp_path / "out")},
    )
    manifest = json.loads((destination / "run_date=2026-03-01" / "_manifest.json").read_text())
    assert manifest["run_date"] == "2026-03-01"
    # the schema refuses such a run_date at composition; the step refuses it at run time
    with pytest.raises(ConfigError, match=r"run_date: expected a date YYYY-MM-DD"):
        step_params("publish", *dated, override("run_date", "03/01/2026"))
    with pytest.raises(ParamError, match=r"run_date '03/01/2026' is not a date YYYY-MM-DD"):
        publish.run(
            inputs,
            _publish_params(*dated, run_date="03/01/2026"),
            {"predictions": str(tmp_path / "out2")},
        )


def test_publish_by_run_id_needs_a_run_id(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(DataError, match=r"publish.partition_by=run_id needs the run id"):
        publish.run(
            {"predictions": [str(p) for p in shard_predictions], "scoring": str(pipeline.scoring)},
            # a backend that gives no run id leaves it empty
            _publish_params(
                override("publish.destination", str(tmp_path / "d")),
                "publish.partition_by=run_id",
                run_id="",
            ),
            {"predictions": str(tmp_path / "out")},
        )
    assert not (tmp_path / "out" / "_manifest.json").exists()
