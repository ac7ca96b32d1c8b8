"""What a local run reports: one record per node, the run's result, and who is told.

:class:`NodeRecord` is what the run manifest holds per node (rewritten at every state change);
:class:`RunResult` is what :func:`pipelines.local.runner.run_local` returns to the CLI and to
tests; a :class:`Reporter` (the live progress table, or plain log lines) is told of every
change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipelines.dag import Dag, Ref

__all__ = [
    "CACHED",
    "DONE",
    "FAILED",
    "NOT_RUN",
    "PENDING",
    "RUNNING",
    "SUCCEEDED",
    "LogReporter",
    "NodeRecord",
    "Reporter",
    "RunResult",
]

log = logging.getLogger("kfbatch.runner")

#: Node states; the terminal ones are succeeded, cached, failed and not_run.
PENDING, RUNNING, SUCCEEDED, CACHED, FAILED, NOT_RUN = (
    "pending",
    "running",
    "succeeded",
    "cached",
    "failed",
    "not_run",
)
DONE = (SUCCEEDED, CACHED)


@dataclass
class NodeRecord:
    """What happened to one node in this run (serialised into the run manifest)."""

    node: str
    step: str
    component: str
    status: str = PENDING
    cache_key: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    ended_at: str | None = None
    error: str | None = None

    @property
    def log_path(self) -> str | None:
        """The log of the last attempt, if the node ran in this run."""
        return self.attempts[-1]["log"] if self.attempts else None


@dataclass(frozen=True)
class RunResult:
    """The outcome of a local run."""

    run_id: str
    run_dir: Path
    status: str
    nodes: dict[str, NodeRecord]
    dag: Dag
    smoke: bool = False

    @property
    def ok(self) -> bool:
        """Whether every node succeeded or was reused from the cache."""
        return self.status == SUCCEEDED

    @property
    def failed(self) -> list[NodeRecord]:
        """The nodes that failed."""
        return [r for r in self.nodes.values() if r.status == FAILED]

    def output(self, node: str, name: str) -> Path:
        """Path of output ``name`` of ``node`` (a link into the step cache)."""
        return self.run_dir / "steps" / node / "outputs" / name

    def final_outputs(self) -> dict[str, Path]:
        """``node.output`` -> path for outputs no other step reads: what the run produced."""
        consumed = {
            (ref.step, ref.output)
            for step in self.dag.steps
            for ref in step.inputs.values()
            if isinstance(ref, Ref)
        }
        return {
            f"{record.node}.{name}": self.output(record.node, name)
            for record in self.nodes.values()
            for name in record.outputs
            if (record.step, name) not in consumed
        }


class Reporter(Protocol):
    """Receives run progress; the CLI shows it live on a terminal or as log lines."""

    def start(self, run_id: str, run_dir: Path, records: Mapping[str, NodeRecord]) -> None:
        """The run starts with these nodes."""

    def update(self, record: NodeRecord) -> None:
        """A node changed state."""

    def finish(self, result: RunResult) -> None:
        """The run ended."""


class LogReporter:
    """Plain log lines, one per state change."""

    run_id = ""

    def start(self, run_id: str, run_dir: Path, records: Mapping[str, NodeRecord]) -> None:
        self.run_id = run_id
        log.info("run %s: %d steps in %s", run_id, len(records), run_dir, extra={"run_id": run_id})

    def update(self, record: NodeRecord) -> None:
        detail = f" ({record.error})" if record.error and record.status == FAILED else ""
        attempt = f" attempt {len(record.attempts)}" if record.status == RUNNING else ""
        context = {"run_id": self.run_id, "step": record.node, "attempt": len(record.attempts)}
        log.info("step %s: %s%s%s", record.node, record.status, attempt, detail, extra=context)

    def finish(self, result: RunResult) -> None:
        log.info("run %s: %s", result.run_id, result.status, extra={"run_id": result.run_id})
