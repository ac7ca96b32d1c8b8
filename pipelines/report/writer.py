"""Render ``runs/<run-id>/report.html``: one self-contained page about one run."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from components.names import REPORT_FILE
from pipelines.report.collect import RunFacts, collect

__all__ = ["render_report", "write_report"]

log = logging.getLogger("kfbatch.report")


def write_report(run_dir: Path | str) -> Path:
    """Write ``report.html`` into the run folder ``run_dir`` and return its path.

    The page is self-contained (inline CSS, pictures as ``data:`` URIs, no script) so it
    opens offline and can be mailed or attached as it is; links to logs and outputs are
    relative to the run folder. Written atomically: a half-written report is never visible.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``manifest.json``.
    """
    run_dir = Path(run_dir)
    began = time.perf_counter()
    page = render_report(run_dir)
    target = run_dir / REPORT_FILE
    tmp = run_dir / f".{REPORT_FILE}.tmp-{os.getpid()}"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    log.debug("run report %s written in %.2fs", target, time.perf_counter() - began)
    return target


def render_report(run_dir: Path) -> str:
    """The report page of the run folder ``run_dir`` as HTML text."""
    from pipelines.report import charts

    facts = collect(run_dir)
    pictures = {
        "dag": charts.dag_picture(facts),
        "timeline": charts.timeline_picture(facts),
        "training": charts.training_picture(facts.training),
        "roc": charts.roc_picture(facts.evaluation),
        "throughput": charts.throughput_picture(facts.inference),
    }
    template = _environment().get_template("report.html.j2")
    return template.render(
        run=facts,
        pictures=pictures,
        colours=charts.STATUS_COLOURS,
        failures=_failures(facts),
        parallelism={s.name: s.parallelism for s in facts.steps if s.parallelism},
    )


def _failures(facts: RunFacts) -> list[dict[str, Any]]:
    """Every failed attempt (retried ones too) and every failed node, newest last."""
    found = []
    for node in facts.nodes:
        for attempt in node.attempts:
            if attempt["status"] in ("failed", "interrupted") or attempt["error"]:
                found.append({"node": node.node, **attempt})
        if node.status == "failed" and not any(f["node"] == node.node for f in found):
            found.append({"node": node.node, "attempt": None, "error": node.error, "log": None})
    return found


def _environment() -> Any:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("pipelines.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["number"] = _number
    environment.filters["duration"] = _duration
    return environment


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{rest:02d}s" if hours else f"{minutes}m{rest:02d}s"
