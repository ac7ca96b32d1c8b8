"""Credentials never end up in a file: compile and manifests refuse them, a local run and
``kfbatch config`` redact them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.config.compose import compose_config
from pipelines.config.secrets import REDACTED
from pipelines.errors import ConfigError
from pipelines.kubeflow.compiler import compile_pipeline
from pipelines.manifests.render import render_tree

SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
TOKEN = "FQoGZXIvYXdzEJr-session-token"
PASSWORD = "correct-horse-battery"
#: A user following the README's object-store example, plus a KFP host with a password.
WITH_SECRETS = [
    "+data.storage_options.endpoint_override=http://127.0.0.1:9",
    f"+data.storage_options.secret_key={SECRET_KEY}",
    f"+data.storage_options.session_token={TOKEN}",
    f"kubeflow.host=https://admin:{PASSWORD}@kubeflow.example.com/pipeline",
]
SECRETS = (SECRET_KEY, TOKEN, PASSWORD)


def _files_holding_secrets(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in SECRETS if s.encode() in data]
    return found


@pytest.mark.parametrize(
    ("render", "what"),
    [
        (compile_pipeline, "a compiled pipeline"),
        (lambda composed: render_tree(composed), "GitOps manifests"),
    ],
    ids=["compile", "manifests"],
)
def test_files_people_commit_refuse_inline_credentials(render, what: str) -> None:
    composed = compose_config([*WITH_SECRETS, "manifests=default"])
    with pytest.raises(ConfigError) as error:
        render(composed)
    message = str(error.value)
    assert message.startswith("data.storage_options.secret_key: expected no credential")
    assert what in message and "kubeflow.secrets" in message
    assert not any(s in message for s in SECRETS)


def test_a_url_password_is_refused_naming_the_secret_alternative() -> None:
    composed = compose_config([f"kubeflow.host=https://admin:{PASSWORD}@kf.example.com/p"])
    with pytest.raises(ConfigError, match=r"kubeflow.host: expected no credential .*Secret"):
        compile_pipeline(composed)


@pytest.mark.slow
def test_a_local_run_writes_no_credential_anywhere(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    overrides = [
        *WITH_SECRETS,
        "data.rows=2000",
        "trainer.epochs=1",
        "inference.shards=2",
        "runtime.retries=0",
        f"runtime.runs_dir={runs}",
    ]
    assert main(["run", *overrides]) == 0  # as a user runs it: logs, summary, report
    run_dir = (runs / "latest").resolve()
    assert (run_dir / "report.html").is_file()
    assert _files_holding_secrets(runs) == []
    out, err = capfd.readouterr()
    assert not any(s in out + err for s in SECRETS)
    config_yaml = (run_dir / "config.yaml").read_text()
    assert f"secret_key: '{REDACTED}'" in config_yaml
    assert f"https://admin:{REDACTED}@kubeflow.example.com/pipeline" in config_yaml
    composed = compose_config(overrides)  # the run itself still has the values
    assert composed.container["data"]["storage_options"]["secret_key"] == SECRET_KEY
    assert {s.value for s in composed.secrets} == set(SECRETS)
