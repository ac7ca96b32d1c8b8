"""Shared fixtures: CLI invocation in-process, a runtime config in a temporary folder, and a
local S3-compatible server."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipelines.cli import main
from pipelines.config.schema import RuntimeConfig


@dataclass(frozen=True)
class CliResult:
    """Exit code and captured output of one in-process ``kfbatch`` call."""

    code: int
    out: str
    err: str


@pytest.fixture
def kfbatch(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Call the CLI in this process: ``kfbatch("dag", "trainer.epochs=2")``."""

    def call(*argv: str) -> CliResult:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return call


@pytest.fixture
def runtime(tmp_path: Path) -> RuntimeConfig:
    """Runner settings with runs and cache under ``tmp_path`` and fast retries."""
    return RuntimeConfig(
        runs_dir=str(tmp_path / "runs"),
        cache_dir=str(tmp_path / "runs" / ".cache"),
        retries=0,
        retry_backoff_s=0.05,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, Any]]:
    """A local S3-compatible server (moto in server mode) and the storage options to reach it."""
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield {
            "endpoint_override": f"http://127.0.0.1:{port}",
            "access_key": "testing",
            "secret_key": "testing",
            "region": "us-east-1",
            "scheme": "http",
            "allow_bucket_creation": True,
        }
    finally:
        server.stop()
