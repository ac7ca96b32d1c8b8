"""Shared fixtures: CLI invocation in-process and a runtime config in a temporary folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
