"""``kfbatch predictions get|versions`` over a lookup store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from components.scoring.lookup import LookupStore
from pipelines.cli import main

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/predictions.db"
    store = LookupStore(url)
    for day, (version, score) in enumerate([("v1", 0.25), ("v2", 0.75)]):
        store.upsert(
            [
                pa.record_batch(
                    {
                        "id": pa.array([7], pa.int64()),
                        "score": pa.array([score], pa.float32()),
                        "label": pa.array(["1" if score >= 0.5 else "0"]).dictionary_encode(),
                        "model_version": pa.array([version]).dictionary_encode(),
                        "run_id": pa.array([f"run-{day}"]).dictionary_encode(),
                        "scored_at": pa.array([T0], pa.timestamp("ms", tz="UTC")),
                    }
                )
            ],
            model_version=version,
            run_id=f"run-{day}",
            published_at=T0 + dt.timedelta(days=day),
        )
    store.close()
    return url


def test_get_prints_the_newest_prediction(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predictions", "get", "7", f"publish.store_url={url}"]) == 0
    assert capsys.readouterr().out == (
        "7  score 0.75  label 1  model v2  run run-1  scored 2026-01-01T00:00:00\n"
    )


def test_get_all_versions_as_json(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predictions", "get", "7", "--all", "--json", "--store", url]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["model_version"], r["score"], r["label"]) for r in rows] == [
        ("v2", 0.75, "1"),
        ("v1", 0.25, "0"),
    ]


def test_get_an_unknown_id_fails(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predictions", "get", "8", "--store", url]) == 1
    assert capsys.readouterr().out == f"no prediction for id '8' in {url}\n"


def test_versions_lists_newest_first(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predictions", "versions", "--store", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["v2", "v1"]
    assert lines[0].endswith("1 rows  run run-1  published 2026-01-02T00:00:00")
