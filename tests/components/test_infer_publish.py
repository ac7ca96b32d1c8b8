"""Sharded inference and its reduce step: exactly one prediction per scoring row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from components import infer, publish
from components.errors import DataError

from .helpers import Pipeline

SHARDS = 3


@pytest.fixture(scope="module")
def shard_predictions(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("infer")
    dirs = []
    for shard in range(SHARDS):
        metrics = infer.run(
            {"dataset": str(pipeline.dataset), "model": str(pipeline.model)},
            {"shard": shard, "batch_size": 500, "run_id": "run-1", "threshold": 0.5},
            {"predictions": str(root / f"shard{shard}")},
        )
        assert metrics["rows"] > 0 and metrics["rows_per_s"] > 0
        dirs.append(root / f"shard{shard}")
    return dirs


def test_each_shard_writes_typed_predictions(shard_predictions: list[Path]) -> None:
    table = pq.read_table(shard_predictions[1] / "part-00001.parquet")
    assert table.schema == pa.schema(
        [
            ("customer_id", pa.string()),
            ("score", pa.float32()),
            ("label", pa.int8()),
            ("model_version", pa.string()),
            ("run_id", pa.string()),
        ]
    )
    scores = table["score"].to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (table["label"].to_numpy() == (scores >= 0.5)).all()
    assert set(table["run_id"].to_pylist()) == {"run-1"}


def test_publish_gives_one_prediction_per_id(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    metrics = publish.run(
        {"predictions": [str(p) for p in shard_predictions], "dataset": str(pipeline.dataset)},
        {},
        {"predictions": str(tmp_path / "out")},
    )
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
    assert manifest["run_id"] == "run-1"
    assert [f["name"] for f in manifest["files"]] == [f"part-{k:05d}.parquet" for k in range(3)]


def test_publish_refuses_a_missing_shard(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    manifest = json.loads((pipeline.dataset / "_manifest.json").read_text())
    with pytest.raises(DataError) as error:
        publish.run(
            {
                "predictions": [str(shard_predictions[0]), str(shard_predictions[2])],
                "dataset": str(pipeline.dataset),
            },
            {},
            {"predictions": str(tmp_path / "out")},
        )
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
        publish.run(
            {
                "predictions": [*map(str, shard_predictions), str(tmp_path / "copy")],
                "dataset": str(pipeline.dataset),
            },
            {},
            {"predictions": str(tmp_path / "out")},
        )


def test_infer_is_idempotent(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    infer.run(
        {"dataset": str(pipeline.dataset), "model": str(pipeline.model)},
        {"shard": 0, "batch_size": 500, "run_id": "run-1", "threshold": 0.5},
        {"predictions": str(tmp_path)},
    )
    name = "part-00000.parquet"
    assert (tmp_path / name).read_bytes() == (shard_predictions[0] / name).read_bytes()


def test_infer_refuses_a_shard_out_of_range(pipeline: Pipeline, tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        infer.run(
            {"dataset": str(pipeline.dataset), "model": str(pipeline.model)},
            {"shard": 3, "batch_size": 500, "run_id": "r", "threshold": 0.5},
            {"predictions": str(tmp_path)},
        )
    assert str(error.value) == (
        f"shard 3 is out of range: dataset {pipeline.dataset} has 3 scoring shards (0..2); "
        "fan inference out over exactly 3 shards"
    )


def test_publish_refuses_repeated_ids(
    pipeline: Pipeline, shard_predictions: list[Path], tmp_path: Path
) -> None:
    table = pq.read_table(shard_predictions[0] / "part-00000.parquet")
    ids = table["customer_id"].to_pylist()
    ids[1] = ids[0]
    (tmp_path / "bad").mkdir()
    pq.write_table(
        table.set_column(0, "customer_id", pa.array(ids)), tmp_path / "bad" / "part-00000.parquet"
    )
    with pytest.raises(DataError, match=r"part-00000.parquet holds repeated 'customer_id' values"):
        publish.run(
            {
                "predictions": [str(tmp_path / "bad"), *map(str, shard_predictions[1:])],
                "dataset": str(pipeline.dataset),
            },
            {},
            {"predictions": str(tmp_path / "out")},
        )


def test_infer_names_columns_the_model_needs(pipeline: Pipeline, tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    shutil.copytree(pipeline.dataset, dataset)
    shard = dataset / "scoring" / "shard-00000.parquet"
    pq.write_table(pq.read_table(shard).drop_columns(["plan"]), shard)
    with pytest.raises(DataError, match=r"lacks columns \['plan'\]"):
        infer.run(
            {"dataset": str(dataset), "model": str(pipeline.model)},
            {"shard": 0, "batch_size": 500, "run_id": "r", "threshold": 0.5},
            {"predictions": str(tmp_path / "out")},
        )
