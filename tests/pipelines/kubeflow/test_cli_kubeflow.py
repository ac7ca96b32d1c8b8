"""``kfbatch compile|submit|schedule`` and ``runs --runtime kubeflow`` end to end against
the fake KFP API: the commands compile the real demo pipeline and drive the client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, Client

from pipelines.cli.kubeflow import parse_params
from pipelines.errors import ConfigError
from tests.pipelines.kubeflow.kfp_fake_server import FakeKfp

TOKEN = "cli-test-token"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeKfp]:
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    monkeypatch.delenv("KFP_HOST", raising=False)
    monkeypatch.delenv(KF_PIPELINES_SA_TOKEN_ENV, raising=False)
    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    with FakeKfp(token=TOKEN) as fake:
        monkeypatch.setenv("KFP_HOST", fake.url)
        yield fake


def test_compile_writes_a_pipeline_kfp_can_load(kfbatch, tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    result = kfbatch("compile", "-o", str(out), "resources=gpu")
    assert result.code == 0, result.err
    assert result.out.strip() == f"wrote {out}"
    spec = next(yaml.safe_load_all(out.read_text()))
    assert spec["pipelineInfo"]["name"] == "churn-demo"


def test_submit_waits_for_the_run_and_reports_it(kfbatch, server: FakeKfp) -> None:
    result = kfbatch(
        "submit",
        "--wait",
        "--poll",
        "0.01",
        "data=csv",
        "data.uri=s3://bucket/in.csv",
        "data.target=y",
        "data.id_column=id",
        "--param",
        "data_uri=s3://bucket/other.csv",
    )
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[:3] == ["  PENDING", "  RUNNING", "  SUCCEEDED"]
    assert lines[3].startswith("pipeline version churn-demo")
    assert lines[4].startswith("run ") and lines[4].split()[2] == "SUCCEEDED"
    (run,) = server.runs.values()
    assert run["runtime_config"]["parameters"] == {"data_uri": "s3://bucket/other.csv"}

    again = kfbatch(
        "submit", "data=csv", "data.uri=s3://bucket/in.csv", "data.target=y", "data.id_column=id"
    )
    assert "(unchanged, reused)" in again.out
    listed = kfbatch("runs", "list", "--runtime", "kubeflow")
    assert listed.code == 0
    assert len(listed.out.splitlines()) == 3  # header and two runs
    shown = kfbatch("runs", "show", lines[4].split()[1].rstrip(":"), "--runtime", "kubeflow")
    assert "SUCCEEDED" in shown.out


def test_schedule_uses_kfps_six_field_cron(kfbatch, server: FakeKfp) -> None:
    result = kfbatch("schedule", "schedule=nightly")
    assert result.code == 0, result.err
    assert "cron '0 0 2 * * *' (KFP's 6 fields)" in result.out
    (recurring,) = server.recurring_runs.values()
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"


def test_schedule_without_cron_is_a_config_error(kfbatch, server: FakeKfp) -> None:
    result = kfbatch("schedule")
    assert result.code == 2
    assert "schedule.cron" in result.err


def test_failed_run_exits_1_with_its_error(kfbatch, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    with FakeKfp(token=TOKEN, run_states=("RUNNING", "FAILED")) as fake:
        monkeypatch.setenv("KFP_HOST", fake.url)
        result = kfbatch("submit", "--wait", "--poll", "0.01", "experiment=breast_cancer")
    assert result.code == 1
    assert "FAILED" in result.out


def test_params_are_name_value_pairs() -> None:
    assert parse_params(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="--param: expected NAME=VALUE"):
        parse_params(["novalue"])
