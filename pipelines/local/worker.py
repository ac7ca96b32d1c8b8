"""A warm worker process: runs step after step in one interpreter.

Started by :class:`pipelines.local.pool.WorkerPool` as ``python -m pipelines.local.worker FD``
with one end of a socket pair. Component modules stay imported between steps, so a step whose
component imports torch pays for that import once per worker, not once per step. During a
step, file descriptors 1 and 2 and the root logger go to the step's log file, so everything a
component (or a library, or a child process) prints lands in that step's log.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from pipelines.execution import limit_threads, load_component
from pipelines.logs import TEXT_FORMAT, formatter

__all__ = ["StepOutcome", "StepTask", "execute", "serve"]


@dataclass(frozen=True)
class StepTask:
    """Everything a worker needs to run one node."""

    node: str
    component: str
    inputs: dict[str, Any]
    params: dict[str, Any]
    outputs: dict[str, str]
    log_path: str
    threads: int = 1
    env: dict[str, str] = field(default_factory=dict)
    log_format: str = "text"
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepOutcome:
    """What came of one attempt: metrics on success, else the error and whether a retry helps."""

    ok: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    permanent: bool = False
    seconds: float = 0.0


def execute(task: StepTask) -> StepOutcome:
    """Run one task in this process with output captured in its log file."""
    started = time.perf_counter()
    with (
        open(task.log_path, "ab", buffering=0) as log,
        _captured(log.fileno(), task.log_format, task.context),
    ):
        os.environ.update(task.env)
        logging.getLogger("kfbatch.worker").info(
            "step %s: %s (pid %d)", task.node, task.component, os.getpid()
        )
        try:
            function = load_component(task.component)
            limit_threads(task.threads)
            metrics = function(task.inputs, task.params, task.outputs) or {}
            outcome = StepOutcome(True, dict(metrics), seconds=time.perf_counter() - started)
        except Exception as error:  # the runner decides about retries; report everything
            logging.getLogger("kfbatch.worker").exception("step %s failed", task.node)
            outcome = StepOutcome(
                False,
                error=_one_line(error),
                permanent=_is_permanent(error),
                seconds=time.perf_counter() - started,
            )
    return outcome


class _captured:
    """Point fds 1/2 and the root logger at ``fd`` for the duration of a step.

    Log records get the step's ``context`` (run id, step, attempt) as attributes, which the
    JSON format writes out.
    """

    def __init__(self, fd: int, log_format: str, context: dict[str, Any]) -> None:
        self.fd, self.log_format, self.context = fd, log_format, context

    def __enter__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(formatter(self.log_format, TEXT_FORMAT))
        self.handler.addFilter(self._add_context)
        root = logging.getLogger()
        root.addHandler(self.handler)
        root.setLevel(logging.INFO)

    def _add_context(self, record: logging.LogRecord) -> bool:
        for key, value in self.context.items():
            setattr(record, key, value)
        return True

    def __exit__(self, *exc: object) -> None:
        self.handler.flush()
        logging.getLogger().removeHandler(self.handler)
        sys.stdout.flush()
        sys.stderr.flush()
        for target, saved in zip((1, 2), self.saved, strict=True):
            os.dup2(saved, target)
            os.close(saved)


def _is_permanent(error: BaseException) -> bool:
    from components.errors import PermanentError

    return isinstance(error, PermanentError)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text}"


def serve(connection: Connection) -> None:
    """Receive tasks until ``None`` (or the pool goes away) and send back outcomes."""
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        if task is None:
            return
        connection.send(execute(task))


def main() -> None:
    """Entry point of ``python -m pipelines.local.worker FD``."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _exit_with_parent()
    serve(Connection(int(sys.argv[1])))


def _exit_with_parent(interval_s: float = 0.5) -> None:
    """Kill this worker's process group if the runner dies (even by SIGKILL).

    Workers run in their own session so that a step's child processes can be killed with
    it; the flip side is that nothing else would stop a busy worker whose runner is gone.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="kfbatch-parent-watch", daemon=True).start()


if __name__ == "__main__":
    # Re-import under the real module name so pickled outcomes name pipelines.local.worker.
    from pipelines.local import worker

    worker.main()
