"""A pool of warm worker processes that the runner can grow, wait on, and kill one by one.

``concurrent.futures`` pools cannot kill a single stuck task or survive a worker's death;
this pool can: each worker is its own process group (a step's child processes die with it),
a timed-out or crashed step costs only its worker, and the pool starts a new one when needed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

from pipelines.local.worker import StepOutcome, StepTask

__all__ = ["WorkerPool"]


@dataclass
class _Worker:
    process: subprocess.Popen
    connection: Connection
    modules: set[str] = field(default_factory=set)
    task: StepTask | None = None


class WorkerPool:
    """Up to ``max_workers`` worker processes; idle ones are reused, preferring warm ones."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max(1, max_workers)
        self._workers: list[_Worker] = []

    def has_capacity(self) -> bool:
        """Whether another task can start now."""
        busy = sum(1 for w in self._workers if w.task is not None)
        return busy < self.max_workers

    def submit(self, task: StepTask) -> None:
        """Start ``task`` on an idle worker that already imported its module, or any idle one."""
        module = task.component.partition(":")[0]
        idle = [w for w in self._workers if w.task is None]
        worker = next((w for w in idle if module in w.modules), None)
        worker = worker or (idle[0] if idle else self._start())
        worker.modules.add(module)
        worker.task = task
        worker.connection.send(task)

    def wait(self, timeout: float | None) -> list[tuple[StepTask, StepOutcome]]:
        """Outcomes of the tasks that finished within ``timeout`` seconds (maybe none)."""
        busy = {w.connection: w for w in self._workers if w.task is not None}
        if not busy:
            return []
        finished = []
        for connection in wait(list(busy), timeout):
            worker = busy[connection]
            task = worker.task
            try:
                outcome = connection.recv()
            except (EOFError, OSError):
                code = worker.process.wait()
                outcome = StepOutcome(False, error=f"worker process died ({_describe(code)})")
                self._discard(worker)
            worker.task = None
            finished.append((task, outcome))
        return finished

    def kill(self, node: str) -> None:
        """Kill the worker running ``node`` (and its children); its task is lost."""
        for worker in list(self._workers):
            if worker.task is not None and worker.task.node == node:
                _kill_group(worker.process)
                self._discard(worker)

    def running(self) -> list[str]:
        """Nodes being executed now."""
        return [w.task.node for w in self._workers if w.task is not None]

    def close(self) -> None:
        """Stop every worker: idle ones politely, busy ones by force."""
        for worker in self._workers:
            if worker.task is None:
                with contextlib.suppress(OSError):
                    worker.connection.send(None)
            else:
                _kill_group(worker.process)
        for worker in self._workers:
            try:
                worker.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill_group(worker.process)
                worker.process.wait()
            worker.connection.close()
        self._workers.clear()

    def _start(self) -> _Worker:
        parent, child = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.local.worker", str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=_worker_env(),
        )
        child.close()
        worker = _Worker(process, Connection(parent.detach()))
        self._workers.append(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.connection.close()
        self._workers.remove(worker)


def _worker_env() -> dict[str, str]:
    """This process's environment, with its import path, so workers import what it can."""
    paths = [p for p in sys.path if p and Path(p).is_dir()]
    inherited = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, inherited]).strip(os.pathsep)}


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"
