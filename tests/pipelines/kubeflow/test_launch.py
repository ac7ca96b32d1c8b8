"""The in-pod launcher, on artifacts made here (no KFP executor involved)."""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kfp import dsl

from pipelines.kubeflow import launch as launcher
from pipelines.kubeflow.launch import (
    RUN_DATE_TOKEN,
    RUN_ID_TOKEN,
    launch,
    log_evaluation,
    resolve_params,
)

CALLS: list[dict[str, Any]] = []


def toy(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, Any]:
    """A component: records its arguments, writes one file per output, returns metrics."""
    CALLS.append({"inputs": inputs, "params": params, "outputs": outputs, "env": dict(os.environ)})
    for path in outputs.values():
        os.makedirs(path)
        Path(path, "done").write_text("ok")
    return {"rows": 3, "ratio": 0.5, "ok": True, "note": "text", "bad": math.nan}


def _artifact(cls: type, tmp_path: Path, name: str) -> Any:
    return cls(name=name, uri=str(tmp_path / name))


def test_launch_maps_artifacts_params_and_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KFBATCH_RUN_ID", raising=False)
    CALLS.clear()
    shards = [_artifact(dsl.Dataset, tmp_path, f"part{i}") for i in range(2)]
    out = _artifact(dsl.Dataset, tmp_path, "out")
    metrics = _artifact(dsl.Metrics, tmp_path, "metrics")
    returned = launch(
        f"{__name__}:toy",
        json.dumps({"run_id": RUN_ID_TOKEN, "nested": [f"x-{RUN_ID_TOKEN}"], "n": 1}),
        inputs={"shards": shards, "one": shards[0], "uri": "s3://bucket/data.csv"},
        outputs={"out": out},
        metrics=metrics,
        overrides={"shard": 1},
        run_id="run-123",
    )
    (call,) = CALLS
    assert call["inputs"] == {
        "shards": [str(tmp_path / "part0"), str(tmp_path / "part1")],
        "one": str(tmp_path / "part0"),
        "uri": "s3://bucket/data.csv",
    }
    assert call["params"] == {"run_id": "run-123", "nested": ["x-run-123"], "n": 1, "shard": 1}
    assert call["outputs"] == {"out": str(tmp_path / "out")}
    assert call["env"]["KFBATCH_RUN_ID"] == "run-123"
    assert (tmp_path / "out" / "done").read_text() == "ok"
    assert returned["rows"] == 3
    # Only finite numbers reach the UI; booleans as integers.
    assert metrics.metadata == {"ok": 1, "ratio": 0.5, "rows": 3}


def test_params_with_the_run_id_need_a_run_id() -> None:
    assert resolve_params('{"a": 1}') == {"a": 1}
    with pytest.raises(ValueError, match="run id placeholder"):
        resolve_params(json.dumps({"run_id": RUN_ID_TOKEN}))


def test_the_run_date_parameter_or_today() -> None:
    params = json.dumps({"run_date": RUN_DATE_TOKEN})
    assert resolve_params(params, run_date="2026-03-01") == {"run_date": "2026-03-01"}
    today = datetime.now(UTC).date().isoformat()
    assert resolve_params(params, run_date="") == {"run_date": today}


def test_model_metadata_from_model_json(tmp_path: Path) -> None:
    model = _artifact(dsl.Model, tmp_path, "model")
    os.makedirs(model.path)
    Path(model.path, "model.json").write_text(
        json.dumps(
            {
                "version": "0123456789abcdef",
                "model": {"_target_": "components.models.MLP", "hidden": [8]},
                "target": "churned",
                "input_dim": 12,
                "feature_spec_version": "f" * 64,
                "metrics": {"val_roc_auc": 0.8, "epochs": 3},
            }
        )
    )
    launcher.describe_model(model)
    assert model.metadata["version"] == "0123456789abcdef"
    assert model.metadata["framework"] == "pytorch"
    assert model.metadata["framework_version"].startswith("2.")
    assert model.metadata["model"] == "components.models.MLP"
    assert model.metadata["val_roc_auc"] == 0.8


def test_evaluation_shows_confusion_matrix_roc_and_a_report(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "metrics.json").write_text(
        json.dumps(
            {
                "split": "test",
                "accuracy": 0.75,
                "rows": 8,
                "confusion_matrix": [[3, 1], [1, 3]],
                "roc_curve": {
                    "fpr": [0.0, 0.25, 1.0],
                    "tpr": [0.0, 0.75, 1.0],
                    "thresholds": [math.inf, 0.5, 0.0],  # sklearn starts at +inf
                },
            }
        )
    )
    classification = _artifact(dsl.ClassificationMetrics, tmp_path, "classification")
    report = _artifact(dsl.Markdown, tmp_path, "report")
    log_evaluation(str(metrics_dir), classification=classification, report=report)
    matrix = classification.metadata["confusionMatrix"]
    assert [r["row"] for r in matrix["rows"]] == [[3, 1], [1, 3]]
    roc = classification.metadata["confidenceMetrics"]
    assert [p["falsePositiveRate"] for p in roc] == [0.0, 0.25, 1.0]
    assert all(math.isfinite(p["confidenceThreshold"]) for p in roc)
    assert report.metadata["display_name"] == "evaluation report"
    text = Path(report.path).read_text()
    assert "| accuracy | 0.7500 |" in text
    assert "| actual 1 | 1 | 3 |" in text


@pytest.mark.parametrize(
    ("content", "expected"),
    [("200000 100000\n", 2), ("150000 100000\n", 2), ("max 100000\n", None), ("garbage", None)],
)
def test_threads_follow_the_cgroup_cpu_limit(
    tmp_path: Path, content: str, expected: int | None
) -> None:
    (tmp_path / "cpu.max").write_text(content)
    assert launcher._cpu_quota(str(tmp_path)) == expected


def test_threads_from_cgroup_v1(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert launcher._cpu_quota(str(tmp_path)) == 4
