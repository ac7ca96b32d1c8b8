"""The KFP client against a fake KFP v2beta1 API on 127.0.0.1: requests, idempotence, errors."""

# No `from __future__ import annotations`: kfp reads the component's annotations as types.
import hashlib
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kfp import compiler, dsl
from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, Client

from pipelines.config.compose import compose_config
from pipelines.config.schema import Config
from pipelines.errors import ConfigError
from pipelines.kubeflow import client as kfp_client
from pipelines.kubeflow import connection
from pipelines.kubeflow.client import get_run, list_runs, submit_run, wait_for_run
from pipelines.kubeflow.connection import (
    KubeflowAuthError,
    KubeflowError,
    KubeflowNotFound,
    KubeflowUnreachable,
)
from pipelines.kubeflow.package import PipelinePackage
from pipelines.kubeflow.runs import KubeflowTimeout, RunInfo
from pipelines.kubeflow.schedule import create_schedule
from tests.pipelines.kubeflow.kfp_fake_server import FakeKfp

TOKEN = "t0ken-that-must-never-be-shown"
UPLOAD = "/apis/v2beta1/pipelines/upload"
UPLOAD_VERSION = "/apis/v2beta1/pipelines/upload_version"
RUNS = "/apis/v2beta1/runs"
RECURRING = "/apis/v2beta1/recurringruns"


@dsl.component(base_image="python:3.11-slim")
def _echo(uri: str, rows: int, ratio: float, flag: bool) -> str:
    return f"{uri} {rows} {ratio} {flag}"


@dsl.pipeline(name="tiny")
def _tiny(uri: str, rows: int = 10, ratio: float = 0.5, flag: bool = False) -> None:
    _echo(uri=uri, rows=rows, ratio=ratio, flag=flag)


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny compiled pipeline: ``uri`` (required), ``rows``, ``ratio``, ``flag``."""
    path = tmp_path_factory.mktemp("pipeline") / "tiny.yaml"
    compiler.Compiler().compile(_tiny, str(path))
    return path


@pytest.fixture(scope="module")
def base_config() -> Config:
    return compose_config(["kubeflow.host=http://127.0.0.1:9"]).config


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The token in KFP_TOKEN; no KFP_HOST; kfp's context file kept out of the home folder."""
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    monkeypatch.delenv("KFP_HOST", raising=False)
    monkeypatch.delenv(KF_PIPELINES_SA_TOKEN_ENV, raising=False)
    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))


@pytest.fixture
def server() -> Iterator[FakeKfp]:
    with FakeKfp(token=TOKEN) as fake:
        yield fake


def configured(base: Config, host: str, *, cron: str | None = None, **kubeflow: Any) -> Config:
    """``base`` pointed at ``host``, with ``kubeflow`` overrides and a schedule."""
    return replace(
        base,
        kubeflow=replace(base.kubeflow, host=host, **kubeflow),
        schedule=replace(base.schedule, cron=cron),
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- submit ------------------------------------------------------------------------------


def test_submit_uploads_the_yaml_as_is_and_starts_a_run_with_parameters(
    server: FakeKfp, base_config: Config, pipeline_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configured(base_config, server.url, service_account="pipeline-runner")
    submission = submit_run(
        config,
        pipeline_file,
        params={"uri": "s3://bucket/churn.csv", "rows": "25", "flag": "true"},
        run_name="nightly-1",
    )

    assert server.requests, "no request reached the server"
    assert {r.headers.get("authorization") for r in server.requests} == {f"Bearer {TOKEN}"}
    (upload,) = server.calls("POST", UPLOAD)
    filename, content = upload.files()["uploadfile"]
    assert content == pipeline_file.read_bytes()
    assert filename == f"{config.name}.yaml"
    assert upload.query["name"] == config.name
    assert upload.query["namespace"] == "kubeflow"
    assert not server.calls("POST", UPLOAD_VERSION)

    (experiment,) = server.experiments.values()
    assert experiment["display_name"] == config.kubeflow.experiment == config.name
    (create,) = server.calls("POST", RUNS)
    body = create.json()
    assert body["display_name"] == "nightly-1"
    assert body["experiment_id"] == experiment["experiment_id"] == submission.experiment_id
    assert body["pipeline_version_reference"] == {
        "pipeline_id": submission.version.pipeline_id,
        "pipeline_version_id": submission.version.version_id,
    }
    assert body["runtime_config"]["parameters"] == {
        "uri": "s3://bucket/churn.csv",
        "rows": 25,
        "flag": True,
    }
    assert body["service_account"] == "pipeline-runner"

    run = submission.run
    assert run.run_id in server.runs
    assert (run.name, run.state) == ("nightly-1", "PENDING")
    assert run.url == f"{server.url}/#/runs/details/{run.run_id}"
    assert run.created_at is not None and run.finished_at is None
    assert not submission.version.reused
    assert submission.version.url == (
        f"{server.url}/#/pipelines/details/{submission.version.pipeline_id}"
        f"/version/{submission.version.version_id}"
    )
    assert capsys.readouterr().out == ""  # kfp's printed links do not reach the terminal


def test_resubmitting_the_same_yaml_reuses_its_version_and_a_changed_one_adds_a_version(
    server: FakeKfp, base_config: Config, pipeline_file: Path, tmp_path: Path
) -> None:
    config = configured(base_config, server.url)
    params = {"uri": "/data/in.csv"}
    first = submit_run(config, pipeline_file, params=params)
    again = submit_run(config, pipeline_file, params=params)

    assert again.version.reused
    assert again.version.version_id == first.version.version_id
    assert len(server.calls("POST", UPLOAD)) == 1
    assert not server.calls("POST", UPLOAD_VERSION)
    assert len(server.calls("POST", "/apis/v2beta1/experiments")) == 1
    assert len(server.runs) == 2

    changed = tmp_path / "changed.yaml"
    changed.write_bytes(pipeline_file.read_bytes() + b"# changed\n")
    digest = hashlib.sha256(changed.read_bytes()).hexdigest()
    new = submit_run(config, changed, params=params)
    (upload,) = server.calls("POST", UPLOAD_VERSION)
    assert upload.query["name"] == new.version.name == f"{config.name}-{digest[:12]}"
    assert upload.query["pipelineid"] == first.version.pipeline_id
    assert upload.files()["uploadfile"][1] == changed.read_bytes()
    assert not new.version.reused
    assert new.version.version_id != first.version.version_id

    same_text = submit_run(config, changed.read_text(), params=params)  # YAML text, not a path
    assert same_text.version.reused and same_text.version.version_id == new.version.version_id
    assert len(server.calls("POST", UPLOAD_VERSION)) == 1
    assert len(server.versions) == 2


def test_wait_streams_each_state_change_until_a_terminal_state(
    server: FakeKfp, base_config: Config, pipeline_file: Path
) -> None:
    seen: list[RunInfo] = []
    submission = submit_run(
        configured(base_config, server.url),
        pipeline_file,
        params={"uri": "x"},
        wait=True,
        poll_s=0,
        on_status=seen.append,
    )
    assert [run.state for run in seen] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert submission.run.state == "SUCCEEDED" and submission.run.succeeded
    assert submission.run.finished_at is not None
    assert len(server.calls("GET", f"{RUNS}/{submission.run.run_id}")) == 3


def test_wait_returns_a_failed_run_with_its_error(base_config: Config, pipeline_file: Path) -> None:
    with FakeKfp(token=TOKEN, run_states=("RUNNING", "FAILED")) as server:
        submission = submit_run(
            configured(base_config, server.url),
            pipeline_file,
            params={"uri": "x"},
            wait=True,
            poll_s=0,
        )
    assert submission.run.state == "FAILED" and submission.run.done
    assert not submission.run.succeeded
    assert submission.run.error == "task 'train' failed: exit code 1"


def test_wait_is_bounded_by_its_timeout(base_config: Config, pipeline_file: Path) -> None:
    with FakeKfp(token=TOKEN, run_states=("RUNNING",)) as server:
        config = configured(base_config, server.url)
        run = submit_run(config, pipeline_file, params={"uri": "x"}).run
        started = time.monotonic()
        with pytest.raises(KubeflowTimeout) as caught:
            wait_for_run(config, run.run_id, timeout_s=0.3, poll_s=0.02)
    assert time.monotonic() - started < 3
    assert caught.value.run.state == "RUNNING"
    assert str(caught.value) == (
        f"run {run.run_id} is still RUNNING after 0.3 s; follow it at {run.url}"
    )


def test_wait_rides_out_a_transient_failure(
    server: FakeKfp, base_config: Config, pipeline_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = configured(base_config, server.url)
    run = submit_run(config, pipeline_file, params={"uri": "x"}).run
    server.fail("GET", f"{RUNS}/{run.run_id}", 503, "upstream connect error")
    final = wait_for_run(config, run.run_id, timeout_s=10, poll_s=0)
    assert final.state == "SUCCEEDED"
    assert "503: upstream connect error" in caplog.text and "retrying, 1 of 3" in caplog.text


# --- schedule ----------------------------------------------------------------------------


def test_schedule_creates_a_recurring_run_on_the_6_field_cron(
    server: FakeKfp, base_config: Config, pipeline_file: Path
) -> None:
    config = configured(base_config, server.url, cron="0 2 * * *")
    info = create_schedule(config, pipeline_file, params={"uri": "s3://b/in", "rows": 7})

    (create,) = server.calls("POST", RECURRING)
    body = create.json()
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["display_name"] == config.name
    (experiment_id,) = server.experiments
    assert body["experiment_id"] == experiment_id == info.experiment_id
    assert body["pipeline_version_reference"] == {
        "pipeline_id": info.version.pipeline_id,
        "pipeline_version_id": info.version.version_id,
    }
    assert body["runtime_config"]["parameters"] == {"uri": "s3://b/in", "rows": 7}
    (upload,) = server.calls("POST", UPLOAD)
    assert upload.files()["uploadfile"][1] == pipeline_file.read_bytes()
    assert (info.cron, info.status, info.reused) == ("0 0 2 * * *", "ENABLED", False)
    assert info.url == f"{server.url}/#/recurringrun/details/{info.recurring_run_id}"


def test_scheduling_again_reuses_an_identical_recurring_run_and_replaces_only_on_request(
    server: FakeKfp, base_config: Config, pipeline_file: Path
) -> None:
    nightly = configured(base_config, server.url, cron="0 2 * * *")
    first = create_schedule(nightly, pipeline_file, params={"uri": "x"})
    again = create_schedule(nightly, pipeline_file, params={"uri": "x"})
    assert again.reused and again.recurring_run_id == first.recurring_run_id
    assert len(server.calls("POST", RECURRING)) == 1

    later = configured(base_config, server.url, cron="30 3 * * *")
    with pytest.raises(KubeflowError) as caught:
        create_schedule(later, pipeline_file, params={"uri": "x"})
    assert f"already has a recurring run named '{nightly.name}' ({first.recurring_run_id}" in str(
        caught.value
    )
    assert "cron '0 0 2 * * *'" in str(caught.value) and "--replace" in str(caught.value)
    assert len(server.recurring_runs) == 1

    replaced = create_schedule(later, pipeline_file, params={"uri": "x"}, replace=True)
    assert not replaced.reused and replaced.cron == "0 30 3 * * *"
    assert server.calls("DELETE", f"{RECURRING}/{first.recurring_run_id}")
    assert list(server.recurring_runs) == [replaced.recurring_run_id]


def test_schedule_without_a_cron_fails_before_any_request(
    server: FakeKfp, base_config: Config, pipeline_file: Path
) -> None:
    with pytest.raises(ConfigError, match=r"^schedule.cron: expected a 5-field cron expression"):
        create_schedule(configured(base_config, server.url), pipeline_file, params={"uri": "x"})
    config = configured(base_config, server.url, cron="0 2 * * * *")
    with pytest.raises(ConfigError, match="found 6"):
        create_schedule(config, pipeline_file, params={"uri": "x"})
    assert server.requests == []


# --- runs list / get ---------------------------------------------------------------------


def test_list_runs_shows_this_experiment_newest_first(
    server: FakeKfp, base_config: Config, pipeline_file: Path
) -> None:
    config = configured(base_config, server.url)
    for name in ("first", "second", "third"):
        submit_run(config, pipeline_file, params={"uri": "x"}, run_name=name)
    other = configured(base_config, server.url, experiment="other")
    submit_run(other, pipeline_file, params={"uri": "x"}, run_name="elsewhere")

    runs = list_runs(config, limit=10)
    assert [run.name for run in runs] == ["third", "second", "first"]
    assert all(run.url == f"{server.url}/#/runs/details/{run.run_id}" for run in runs)
    listed = server.calls("GET", RUNS)[-1]
    assert listed.query["sort_by"] == "created_at desc"
    assert listed.query["page_size"] == "10"
    assert server.experiments[listed.query["experiment_id"]]["display_name"] == config.name
    assert [run.name for run in list_runs(other)] == ["elsewhere"]


def test_list_runs_of_a_missing_experiment_is_empty_and_creates_nothing(
    server: FakeKfp, base_config: Config
) -> None:
    assert list_runs(configured(base_config, server.url)) == []
    assert not server.calls("POST")


def test_get_run_and_a_missing_run(
    server: FakeKfp, base_config: Config, pipeline_file: Path
) -> None:
    config = configured(base_config, server.url)
    run = submit_run(config, pipeline_file, params={"uri": "x"}, run_name="one").run
    got = get_run(config, run.run_id)
    assert (got.run_id, got.name, got.url) == (run.run_id, "one", run.url)
    with pytest.raises(KubeflowNotFound) as caught:
        get_run(config, "nope")
    assert str(caught.value) == f"no run 'nope' at {server.url} (404: Run nope not found)"


# --- parameters and packages -------------------------------------------------------------


def test_parameters_are_checked_and_converted_before_anything_is_sent(
    server: FakeKfp, base_config: Config, pipeline_file: Path
) -> None:
    package = PipelinePackage.load(pipeline_file)
    assert package.check_params({"uri": "u", "rows": "3", "ratio": "0.25", "flag": "no"}) == {
        "uri": "u",
        "rows": 3,
        "ratio": 0.25,
        "flag": False,
    }
    config = configured(base_config, server.url)
    with pytest.raises(ConfigError) as unknown:
        submit_run(config, pipeline_file, params={"uri": "u", "row": "3"})
    assert str(unknown.value) == (
        "params.row: expected a parameter the pipeline declares (flag, ratio, rows, uri), got '3'"
    )
    with pytest.raises(ConfigError, match=r"^params.uri: expected a value \(the pipeline"):
        submit_run(config, pipeline_file, params={"rows": 3})
    with pytest.raises(ConfigError, match=r"^params.rows: expected an integer .* got 'ten'$"):
        submit_run(config, pipeline_file, params={"uri": "u", "rows": "ten"})
    assert server.requests == []


def test_a_file_that_is_not_a_compiled_pipeline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KubeflowError, match=r"pass a pathlib.Path to read a file"):
        PipelinePackage.load(str(tmp_path / "pipeline.yaml"))
    other = tmp_path / "other.yaml"
    other.write_text("kind: Deployment\n")
    with pytest.raises(KubeflowError, match=r"other.yaml is not a compiled KFP pipeline"):
        PipelinePackage.load(other)
    with pytest.raises(KubeflowError, match=r"cannot read the pipeline .*missing.yaml"):
        PipelinePackage.load(tmp_path / "missing.yaml")


# --- connection settings -----------------------------------------------------------------


def test_host_comes_from_kfp_host_when_the_config_has_none(
    server: FakeKfp, base_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = configured(base_config, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^kubeflow.host: expected the KFP API URL.*KFP_HOST"):
        list_runs(config)
    monkeypatch.setenv("KFP_HOST", server.url + "/")
    assert list_runs(config) == []
    assert server.requests
    monkeypatch.setenv("KFP_HOST", "localhost:8888")
    with pytest.raises(ConfigError, match=r"an http:// or https:// URL.*environment variable"):
        list_runs(config)


def test_a_token_given_instead_of_a_variable_name_is_never_echoed(base_config: Config) -> None:
    config = configured(base_config, "http://127.0.0.1:9", token_env="eyJhbGciOi.secret.part")
    with pytest.raises(ConfigError) as caught:
        list_runs(config)
    assert "secret" not in str(caught.value)
    assert str(caught.value).startswith("kubeflow.token_env: expected the NAME of an environment")


def test_in_cluster_sends_kfps_projected_token_and_rereads_it_when_rotated(
    base_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "kfp-token"
    token_file.write_text("pod-token-1\n")
    monkeypatch.setenv(KF_PIPELINES_SA_TOKEN_ENV, str(token_file))
    monkeypatch.delenv("KFP_TOKEN")
    with FakeKfp(token="pod-token-1") as server:
        config = configured(base_config, server.url, in_cluster=True)
        client = kfp_client.KfpClient.from_config(config)
        assert client.list_runs() == []
        token_file.write_text("pod-token-2\n")
        server.token = "pod-token-2"
        assert client.list_runs() == []
    assert {r.headers["authorization"] for r in server.requests} == {
        "Bearer pod-token-1",
        "Bearer pod-token-2",
    }


def test_in_cluster_falls_back_to_the_pods_service_account_token(
    base_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod_token = tmp_path / "sa-token"
    pod_token.write_text("service-account-token")
    monkeypatch.setenv(KF_PIPELINES_SA_TOKEN_ENV, str(tmp_path / "no-kfp-token"))
    monkeypatch.setattr(connection, "POD_TOKEN_PATH", str(pod_token))
    with FakeKfp(token="service-account-token") as server:
        assert list_runs(configured(base_config, server.url, in_cluster=True)) == []
    monkeypatch.setattr(connection, "POD_TOKEN_PATH", str(tmp_path / "no-sa-token"))
    with pytest.raises(ConfigError, match=r"^kubeflow.in_cluster: expected to run in a pod"):
        list_runs(configured(base_config, "http://127.0.0.1:9", in_cluster=True))


# --- errors ------------------------------------------------------------------------------


def test_an_unreachable_endpoint_is_one_clear_line(base_config: Config) -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(KubeflowUnreachable) as caught:
        list_runs(configured(base_config, host))
    assert time.monotonic() - started < 5  # no retry loop
    message = str(caught.value)
    assert message.startswith(f"cannot reach the KFP API at {host} (connection refused): ")
    assert "kubeflow.host (or KFP_HOST)" in message and "kubectl port-forward" in message
    assert "\n" not in message and "urllib3" not in message and "HTTPConnection" not in message


def test_a_missing_token_names_the_variable_to_set(
    server: FakeKfp, base_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KFP_TOKEN")
    with pytest.raises(KubeflowAuthError) as caught:
        list_runs(configured(base_config, server.url))
    assert str(caught.value) == (
        f"the KFP API at {server.url} refused to answer its health check: not authenticated "
        "(401: Unauthenticated: bad or missing token); no token was sent; set the environment "
        "variable KFP_TOKEN to a bearer token (kubeflow.token_env names the variable)"
    )
    assert "authorization" not in server.requests[0].headers


def test_a_rejected_token_is_reported_without_showing_it(
    server: FakeKfp,
    base_config: Config,
    pipeline_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    config = configured(base_config, server.url, token_env="MY_KFP_TOKEN")
    monkeypatch.setenv("MY_KFP_TOKEN", "expired-secret-token")
    with pytest.raises(KubeflowAuthError) as caught:
        submit_run(config, pipeline_file, params={"uri": "x"})
    assert "the bearer token in $MY_KFP_TOKEN was not accepted" in str(caught.value)
    assert "set MY_KFP_TOKEN to a fresh token" in str(caught.value)
    assert "expired-secret-token" not in str(caught.value)
    monkeypatch.setenv("MY_KFP_TOKEN", TOKEN)
    submit_run(config, pipeline_file, params={"uri": "x"}, wait=True, poll_s=0)
    assert "expired-secret-token" not in caplog.text and TOKEN not in caplog.text


def test_forbidden_names_the_namespace(
    server: FakeKfp, base_config: Config, pipeline_file: Path
) -> None:
    server.fail("POST", "/apis/v2beta1/experiments", 403, "user is not a contributor")
    with pytest.raises(KubeflowAuthError) as caught:
        submit_run(configured(base_config, server.url), pipeline_file, params={"uri": "x"})
    assert str(caught.value).startswith(
        f"the KFP API at {server.url} refused to create experiment 'churn-demo' in namespace "
        "'kubeflow' (403 forbidden: user is not a contributor): the identity of the token in "
        "$KFP_TOKEN has no access there"
    )


def test_a_host_without_the_kfp_api_gives_404_advice(server: FakeKfp, base_config: Config) -> None:
    host = f"{server.url}/not-kfp"
    with pytest.raises(KubeflowNotFound) as caught:
        list_runs(configured(base_config, host))
    assert str(caught.value) == (
        f"the KFP API at {host} could not answer its health check: not found (404: 404 page not "
        "found); check that kubeflow.host is the KFP API URL (the one that serves /apis/v2beta1/)"
    )


def test_a_server_error_says_what_failed(
    server: FakeKfp, base_config: Config, pipeline_file: Path
) -> None:
    server.fail("POST", UPLOAD, 500, "Failed to create a pipeline and a pipeline version")
    with pytest.raises(KubeflowError) as caught:
        submit_run(configured(base_config, server.url), pipeline_file, params={"uri": "x"})
    assert str(caught.value) == (
        f"the KFP API at {server.url} failed to upload pipeline 'churn-demo' (500: Failed to "
        "create a pipeline and a pipeline version); retry later, or check the logs of its "
        "ml-pipeline API server"
    )
    assert caught.value.status == 500
    assert not server.runs


def test_a_login_page_is_recognised(server: FakeKfp, base_config: Config) -> None:
    server.inject(
        "GET",
        "/apis/v2beta1/healthz",
        302,
        headers={"Location": "https://dex.example.com/auth?client_id=kubeflow"},
    )
    with pytest.raises(KubeflowAuthError, match=r"redirected the request to https://dex"):
        list_runs(configured(base_config, server.url))
    server.inject(
        "GET", "/apis/v2beta1/healthz", 200, "<html>Sign in</html>", content_type="text/html"
    )
    with pytest.raises(KubeflowError) as caught:
        list_runs(configured(base_config, server.url))
    assert str(caught.value).startswith(
        f"{server.url} is not the KFP API: /apis/v2beta1/healthz answered with text/html; "
        "set kubeflow.host to the KFP API URL"
    )


def test_multi_user_mode_sends_the_namespace_and_leaves_kfps_context_file_alone(
    base_config: Config, pipeline_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod_namespace = tmp_path / "namespace"
    pod_namespace.write_text("team-a")
    monkeypatch.setattr(Client, "_NAMESPACE_PATH", str(pod_namespace))
    with FakeKfp(token=TOKEN, multi_user=True) as server:
        config = configured(base_config, server.url)  # namespace 'kubeflow': kfp asks healthz
        submission = submit_run(config, pipeline_file, params={"uri": "x"})
        assert [run.run_id for run in list_runs(config)] == [submission.run.run_id]
    assert len(server.calls("GET", "/apis/v2beta1/healthz")) == 2  # one per connection
    assert server.calls("POST", UPLOAD)[0].query["namespace"] == "kubeflow"
    for listed in server.calls("GET", "/apis/v2beta1/experiments"):
        assert listed.query["namespace"] == "kubeflow"
    assert server.calls("POST", "/apis/v2beta1/experiments")[0].json()["namespace"] == "kubeflow"
    assert not Path(Client._LOCAL_KFP_CONTEXT).exists()


def test_the_compiled_demo_is_uploaded_byte_for_byte(server: FakeKfp) -> None:
    from pipelines.kubeflow.compiler import compile_pipeline

    composed = compose_config([f"kubeflow.host={server.url}"])
    text = compile_pipeline(composed)
    submission = submit_run(composed.config, text)
    (upload,) = server.calls("POST", UPLOAD)
    assert upload.files()["uploadfile"][1] == text.encode()
    stored = server.versions[submission.version.version_id]["pipeline_spec"]
    assert stored["pipelineInfo"]["name"] == composed.config.name
    assert server.runs[submission.run.run_id]["pipeline_version_reference"] == {
        "pipeline_id": submission.version.pipeline_id,
        "pipeline_version_id": submission.version.version_id,
    }
