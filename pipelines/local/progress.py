"""A live progress table for terminals (plain log lines are the runner's default)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.local.records import NodeRecord, RunResult

__all__ = ["LiveReporter"]

_STYLE = {
    "pending": "dim",
    "running": "bold cyan",
    "succeeded": "green",
    "cached": "blue",
    "failed": "bold red",
    "not_run": "dim",
    "interrupted": "yellow",
}


class LiveReporter:
    """Redraws one row per node (status, attempt, elapsed time) while the run goes on."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.records: Mapping[str, NodeRecord] = {}
        self.title = ""
        self.live: Any = None

    def start(self, run_id: str, run_dir: Path, records: Mapping[str, NodeRecord]) -> None:
        from rich.live import Live

        self.records, self.title = records, f"run {run_id}"
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def update(self, record: NodeRecord) -> None:
        if self.live is not None:
            self.live.refresh()

    def finish(self, result: RunResult) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.stop()

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=self.title, title_justify="left", expand=False)
        for column in ("step", "status", "attempt", "time"):
            table.add_column(column)
        for record in self.records.values():
            style = _STYLE.get(record.status, "")
            attempts = str(len(record.attempts)) if record.attempts else ""
            table.add_row(record.node, f"[{style}]{record.status}[/]", attempts, _elapsed(record))
        return table


def _elapsed(record: NodeRecord) -> str:
    if not record.started_at or record.status == "cached":
        return ""
    start = datetime.fromisoformat(record.started_at).timestamp()
    end = datetime.fromisoformat(record.ended_at).timestamp() if record.ended_at else time.time()
    return f"{end - start:.1f}s"
