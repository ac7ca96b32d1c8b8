"""The local runner's retry of a SIGKILLed training step resumes from its checkpoint."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pipelines.config.compose import compose_config
from pipelines.local.runner import run_local

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.integration]

CONFIG = [
    "data.rows=3000",
    "stages=[etl,train]",
    "trainer.epochs=8",
    "trainer.batch_size=32",
    "trainer.checkpoint.every_n_steps=10",
    "runtime.retries=1",
    "runtime.retry_backoff_s=0.1",
]


def _workers() -> list[int]:
    """This process's local-runner workers."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == os.getpid() and b"pipelines.local.worker" in cmdline:
            found.append(int(proc.name))
    return found


def test_killed_train_step_is_retried_and_resumes(tmp_path: Path) -> None:
    checkpoints = tmp_path / "runs" / ".cache" / "checkpoints"
    killed: list[int] = []

    def kill_when_checkpointed() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            if len(list(checkpoints.rglob("step-*.json"))) >= 2:
                for pid in _workers():
                    os.killpg(pid, signal.SIGKILL)  # the worker and its process group
                    killed.append(pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_checkpointed, daemon=True)
    watcher.start()
    result = run_local(compose_config([*CONFIG, f"runtime.runs_dir={tmp_path / 'runs'}"]))
    watcher.join(timeout=1)
    assert killed, "the train step finished before it could be killed"
    train = result.nodes["train"]
    assert result.ok and train.status == "succeeded"
    assert [a["status"] for a in train.attempts] == ["failed", "succeeded"]
    assert "worker process died (killed by SIGKILL)" in train.attempts[0]["error"]
    retry_log = Path(train.attempts[1]["log"]).read_text()
    assert "resuming from checkpoint" in retry_log and "resumed at epoch" in retry_log

    clean = run_local(compose_config([*CONFIG, f"runtime.runs_dir={tmp_path / 'clean'}"]))
    assert clean.nodes["train"].attempts[0]["status"] == "succeeded"
    resumed = (result.output("train", "model") / "model.pt").read_bytes()
    assert resumed == (clean.output("train", "model") / "model.pt").read_bytes()
