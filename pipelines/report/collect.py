"""Read a run folder into the plain facts a report shows (no plotting, no HTML).

Everything comes from what the runner left in ``runs/<run-id>/``: ``manifest.json``,
``config.yaml``, ``dag.json`` and the step outputs behind ``steps/<node>/outputs/<name>``.
A fact whose file is missing (a step that did not run, a cache entry cleaned since) is left
out, and with it the section that would show it.
"""

from __future__ import annotations

import base64
import json
import logging
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["STATUS_RANK", "NodeView", "RunFacts", "StepView", "collect"]

log = logging.getLogger("kfbatch.report")

#: How bad a status is; a fan-out step shows its worst branch.
STATUS_RANK = {
    "cached": 0,
    "succeeded": 1,
    "pending": 2,
    "not_run": 3,
    "running": 4,
    "interrupted": 5,
    "failed": 6,
}


@dataclass
class NodeView:
    """One executed node (a step, or one branch of a fan-out) as the report shows it."""

    node: str
    step: str
    component: str
    status: str
    started: float | None  # seconds after the run started
    ended: float | None
    attempts: list[dict[str, Any]]  # attempt, status, start, end (run seconds), error, log href
    metrics: dict[str, Any]
    outputs: list[tuple[str, str]]  # (name, relative href)
    error: str | None
    log: str | None  # relative href of the last attempt's log


@dataclass
class StepView:
    """One declared step of the DAG, fan-outs collapsed into one box."""

    name: str
    label: str  # "infer x4" for a fan-out
    status: str  # the worst status of its nodes
    depth: int  # longest path from a source, for left-to-right layering
    upstream: list[str]
    parallelism: int | None = None


@dataclass
class RunFacts:
    """Everything the report template and charts need, read from one run folder."""

    run_dir: Path
    run_id: str
    name: str
    status: str
    smoke: bool
    started_at: str | None
    ended_at: str | None
    seconds: float | None
    command: str | None
    argv: list[str]
    dag_digest: str
    config_yaml: str | None
    steps: list[StepView]
    nodes: list[NodeView]
    counts: dict[str, int]
    data: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)
    cv: dict[str, Any] = field(default_factory=dict)
    tuning: dict[str, Any] = field(default_factory=dict)

    def nodes_of(self, module: str) -> list[NodeView]:
        """The nodes whose component lives in ``components.<module>``."""
        return [n for n in self.nodes if n.component.split(":")[0] == f"components.{module}"]


def collect(run_dir: Path) -> RunFacts:
    """Read ``run_dir`` (a run folder with at least ``manifest.json``) into :class:`RunFacts`."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    dag = _read_json(run_dir / "dag.json") or {"steps": []}
    config = run_dir / "config.yaml"
    start = _time(manifest.get("started_at"))
    end = _time(manifest.get("ended_at"))
    nodes = [_node(record, start) for record in manifest.get("nodes", {}).values()]
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.status] = counts.get(node.status, 0) + 1
    argv = [str(a) for a in manifest.get("argv") or []]
    facts = RunFacts(
        run_dir=run_dir,
        run_id=manifest.get("run_id", run_dir.name),
        name=manifest.get("name", ""),
        status=manifest.get("status", "unknown"),
        smoke=bool(manifest.get("smoke")),
        started_at=manifest.get("started_at"),
        ended_at=manifest.get("ended_at"),
        seconds=(end - start) if start is not None and end is not None else None,
        command=_command(argv),
        argv=argv,
        dag_digest=manifest.get("dag_digest", ""),
        config_yaml=config.read_text() if config.is_file() else None,
        steps=_steps(dag, nodes),
        nodes=nodes,
        counts=dict(sorted(counts.items())),
    )
    for section, reader in (
        ("data", _data),
        ("quality", _quality),
        ("training", _training),
        ("cv", _cv),
        ("tuning", _tuning),
        ("evaluation", _evaluation),
        ("inference", _inference),
    ):
        try:
            setattr(facts, section, reader(facts))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
            # A damaged or unexpected output hides its section, never the whole report.
            log.warning("run report: %s section left out: %s", section, error)
    return facts


def _time(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def _since(stamp: str | None, start: float | None) -> float | None:
    moment = _time(stamp)
    return None if moment is None or start is None else max(0.0, moment - start)


def _command(argv: list[str]) -> str | None:
    """``kfbatch run ...`` when the run came from the CLI (tests call the runner directly)."""
    if len(argv) < 2 or argv[1] != "run":
        return None
    return shlex.join(["kfbatch", *argv[1:]])


def _href(node: str, path: str | None) -> str | None:
    """A log's link relative to the report (the manifest stores it as the runner saw it)."""
    if not path:
        return None
    return f"steps/{node}/{Path(path).name}"


def _node(record: dict[str, Any], start: float | None) -> NodeView:
    name = record["node"]
    attempts = [
        {
            "attempt": a.get("attempt"),
            "status": a.get("status", "running"),
            "start": _since(a.get("started_at"), start),
            "end": _since(a.get("ended_at"), start),
            "seconds": a.get("seconds"),
            "error": a.get("error"),
            "log": _href(name, a.get("log")),
        }
        for a in record.get("attempts") or []
    ]
    outputs = [(output, f"steps/{name}/outputs/{output}") for output in record.get("outputs") or {}]
    return NodeView(
        node=name,
        step=record.get("step", name),
        component=record.get("component", ""),
        status=record.get("status", "pending"),
        started=_since(record.get("started_at"), start),
        ended=_since(record.get("ended_at"), start),
        attempts=attempts,
        metrics=record.get("metrics") or {},
        outputs=outputs,
        error=record.get("error"),
        log=attempts[-1]["log"] if attempts else None,
    )


def _steps(dag: dict[str, Any], nodes: list[NodeView]) -> list[StepView]:
    by_step: dict[str, list[NodeView]] = {}
    for node in nodes:
        by_step.setdefault(node.step, []).append(node)
    depth: dict[str, int] = {}
    views = []
    for step in dag.get("steps", []):
        upstream = list(
            dict.fromkeys(
                source["ref"]["step"]
                for source in step.get("inputs", {}).values()
                if "ref" in source
            )
        )
        depth[step["name"]] = 1 + max((depth[u] for u in upstream if u in depth), default=-1)
        fan_out = step.get("fan_out")
        own = by_step.get(step["name"], [])
        status = max((n.status for n in own), key=lambda s: STATUS_RANK.get(s, 2), default="")
        views.append(
            StepView(
                name=step["name"],
                label=f"{step['name']} x{len(fan_out['items'])}" if fan_out else step["name"],
                status=status or "pending",
                depth=depth[step["name"]],
                upstream=upstream,
                parallelism=fan_out["parallelism"] if fan_out else None,
            )
        )
    return views


def _read_json(path: Path) -> Any:
    """The JSON at ``path``, or None when it is missing (a step that did not run)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _output(
    facts: RunFacts, module: str, name: str, file: str, *, step: str | None = None
) -> tuple[Any, str] | None:
    """The JSON ``file`` of output ``name`` of the first ``components.<module>`` node
    (of DAG step ``step`` when given: CV folds and tuning trials also run ``train``)."""
    for node in facts.nodes_of(module):
        if step is not None and node.step != step:
            continue
        if node.status not in ("succeeded", "cached"):
            continue
        for output, href in node.outputs:
            if output == name:
                found = _read_json(facts.run_dir / href / file)
                if found is not None:
                    return found, f"{href}/{file}"
    return None


def _data(facts: RunFacts) -> dict[str, Any]:
    data: dict[str, Any] = {}
    dataset = _output(facts, "etl", "dataset", "_manifest.json")
    if dataset:
        manifest, href = dataset
        data.update(
            rows=manifest.get("rows"),
            splits=manifest.get("splits", {}),
            schema=manifest.get("schema", []),
            id_column=manifest.get("id_column"),
            target=manifest.get("target"),
            dataset_href=href,
        )
    scoring = _output(facts, "etl", "scoring", "_manifest.json")
    if scoring:
        data["shards"] = scoring[0].get("shards", [])
        data["scoring_rows"] = scoring[0].get("rows")
    spec = _output(facts, "etl", "feature_spec", "feature_spec.json")
    if spec:
        spec, href = spec
        roles = {}
        for role in ("numeric", "categorical", "timestamp"):
            for column in spec.get(role, []):
                roles[column["name"]] = role
        data["roles"] = roles
        data["spec"] = {
            "numeric": spec.get("numeric", []),
            "categorical": [
                {"name": c["name"], "size": len(c.get("vocabulary", [])), "values": c["vocabulary"]}
                for c in spec.get("categorical", [])
            ],
            "timestamp": spec.get("timestamp", []),
            "fitted_rows": spec.get("fitted_rows"),
            "version": spec.get("version", ""),
            "href": href,
        }
    return data


def _quality(facts: RunFacts) -> dict[str, Any]:
    """Check results, row accounting and per-column profiles of the etl ``quality`` output.

    Read from every etl node, failed ones included: a failed ``error`` check is when the
    report matters most.
    """
    for node in facts.nodes_of("etl"):
        for output, href in node.outputs:
            report = (
                _read_json(facts.run_dir / href / "quality.json") if output == "quality" else None
            )
            if report is None:
                continue
            profiles = {}
            for stage, profile in report.get("profiles", {}).items():
                columns = []
                for name, column in profile.get("columns", {}).items():
                    histogram = column.get("histogram") or {}
                    counts = histogram.get("counts") or []
                    top = max(counts) if counts else 0
                    columns.append(
                        {
                            "name": name,
                            **column,
                            "bars": [round(100 * c / top) if top else 0 for c in counts],
                            "top": column.get("top", [])[:5],
                        }
                    )
                profiles[stage] = {"rows": profile.get("rows"), "columns": columns}
            return {
                "rows_in": report.get("rows_in"),
                "rows_out": report.get("rows_out"),
                "rows_rejected": report.get("rows_rejected"),
                "rejects_by_reason": report.get("rejects_by_reason", {}),
                "checks": report.get("checks", []),
                "profiles": {k: v for k, v in profiles.items() if v["columns"]},
                "href": f"{href}/quality.md",
            }
    return {}


def _training(facts: RunFacts) -> dict[str, Any]:
    model = _output(facts, "train", "model", "model.json", step="train")
    if not model:
        return {}
    model, href = model
    history = model.get("history", [])
    columns = list(dict.fromkeys(k for h in history for k in h if k != "epoch"))
    return {
        "history": history,
        "columns": columns,
        "task": model.get("task", "binary"),
        "tuned": model.get("tuned"),
        "metrics": model.get("metrics", {}),
        "version": model.get("version", ""),
        "model": model.get("model", {}),
        "href": href,
    }


_CONFUSION = ("tn", "fp", "fn", "tp")  # shown as the confusion matrix


def _cv(facts: RunFacts) -> dict[str, Any]:
    found = _output(facts, "cv", "report", "cv.json")
    if not found:
        return {}
    report, href = found
    folder = facts.run_dir / href.rsplit("/", 1)[0]
    return {
        "folds": report.get("folds", []),
        "summary": report.get("summary", {}),
        "plot": _png_uri(folder / "cv.png"),
        "href": href,
    }


def _tuning(facts: RunFacts) -> dict[str, Any]:
    found = _output(facts, "tune", "best", "results.json")
    if not found:
        return {}
    results, href = found
    folder = facts.run_dir / href.rsplit("/", 1)[0]
    trials = results.get("trials", [])
    params = list(dict.fromkeys(k for t in trials for k in t if k.startswith("param:")))
    return {
        "objective": results.get("objective"),
        "direction": results.get("direction"),
        "trials": sorted(trials, key=lambda t: t.get("rank", 0)),
        "params": params,
        "best": _read_json(folder / "best.json") or {},
        "plot": _png_uri(folder / "results.png"),
        "href": href,
    }


def _png_uri(path: Path) -> str | None:
    """A PNG a step wrote, as a data URI (the report embeds its pictures)."""
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _evaluation(facts: RunFacts) -> dict[str, Any]:
    metrics = _output(facts, "evaluate", "metrics", "metrics.json")
    if not metrics:
        return {}
    metrics, href = metrics
    scalars = {
        k: v
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _CONFUSION
    }
    return {
        "scalars": scalars,
        "split": metrics.get("split"),
        "threshold": metrics.get("threshold"),
        "model_version": metrics.get("model_version"),
        "confusion": metrics.get("confusion_matrix"),
        "classes": metrics.get("classes") or ["0", "1"],
        "task": metrics.get("task", "binary"),
        "roc": metrics.get("roc_curve"),
        "href": href,
    }


def _inference(facts: RunFacts) -> dict[str, Any]:
    shards = [
        {
            "node": n.node,
            "status": n.status,
            "rows": n.metrics.get("rows"),
            "seconds": n.metrics.get("seconds"),
            "rows_per_s": n.metrics.get("rows_per_s"),
            "batch_size": n.metrics.get("batch_size"),
        }
        for n in facts.nodes_of("infer")
    ]
    if all(s["status"] in ("pending", "not_run") for s in shards):
        return {}
    inference: dict[str, Any] = {"shards": shards}
    scored = [s["rows"] for s in shards if isinstance(s["rows"], int)]
    inference["scored_rows"] = sum(scored) if scored else None
    if "scoring_rows" in facts.data:
        inference["scoring_rows"] = facts.data["scoring_rows"]
    published = _output(facts, "publish", "predictions", "_manifest.json")
    if published:
        manifest, href = published
        inference.update(
            published_rows=manifest.get("rows"),
            rejected=manifest.get("rejected", 0),
            files=manifest.get("files", []),
            model_version=manifest.get("model_version"),
            run_ids=manifest.get("run_ids", []),
            published_to=manifest.get("published_to"),
            stored=next((n.metrics.get("stored") for n in facts.nodes_of("publish")), None),
            href=href,
        )
    return inference
