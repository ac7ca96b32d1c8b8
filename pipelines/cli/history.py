"""``kfbatch runs list|show|compare|clean``: past runs, local or (list, show) on Kubeflow."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipelines.cli.common import EXIT_OK, add_command, compose, number

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add ``kfbatch runs`` and its verbs to the CLI."""
    runs = commands.add_parser("runs", help="list, show, compare and clean up past runs")
    verbs = runs.add_subparsers(title="verbs", metavar="VERB")
    listing = add_command(verbs, "list", _list, "past runs, newest first")
    show = add_command(
        verbs, "show", _show, "one run: steps, times, logs, outputs", positionals=("run_id",)
    )
    for verb in (listing, show):
        verb.add_argument(
            "--runtime",
            choices=("local", "kubeflow"),
            default="local",
            help="local run folders, or runs of this pipeline's experiment on KFP",
        )
    add_command(
        verbs,
        "compare",
        _compare,
        "two runs: config diff and metric deltas",
        positionals=("first", "second"),
    )
    clean = add_command(verbs, "clean", _clean, "remove old runs and unused cache entries")
    clean.add_argument("--keep", type=int, required=True, help="how many newest runs to keep")
    clean.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    for verb in verbs.choices.values():
        verb.add_argument("--runs-dir", help="default: runtime.runs_dir of the composed config")


def _dirs(args: argparse.Namespace) -> tuple[str, str]:
    runtime = compose(args).config.runtime
    if args.runs_dir:
        return args.runs_dir, f"{args.runs_dir}/.cache"
    return runtime.runs_dir, runtime.cache_dir


def _list(args: argparse.Namespace) -> int:
    if args.runtime == "kubeflow":
        return _list_kubeflow(args)
    from pipelines.local.history import list_runs

    runs_dir, _ = _dirs(args)
    rows = [("run", "name", "status", "started", "seconds", "key metric")]
    for run in list_runs(runs_dir):
        metric = f"{run.key_metric[0]}={number(run.key_metric[1])}" if run.key_metric else ""
        seconds = f"{run.seconds:.1f}" if run.seconds is not None else ""
        rows.append((run.run_id, run.name, run.status, run.started_at[:19], seconds, metric))
    if len(rows) == 1:
        print(f"no runs in {runs_dir}")
        return EXIT_OK
    print(_table(rows))
    return EXIT_OK


def _list_kubeflow(args: argparse.Namespace) -> int:
    from pipelines.kubeflow.client import list_runs

    config = compose(args).config
    rows = [("run", "name", "state", "created", "finished")]
    for run in list_runs(config):
        rows.append(
            (run.run_id, run.name, run.state, _when(run.created_at), _when(run.finished_at))
        )
    if len(rows) == 1:
        print(f"no runs in experiment {config.kubeflow.experiment!r}")
        return EXIT_OK
    print(_table(rows))
    return EXIT_OK


def _show_kubeflow(args: argparse.Namespace) -> int:
    from pipelines.kubeflow.client import get_run

    run = get_run(compose(args).config, args.run_id)
    print(f"run {run.run_id} ({run.name}): {run.state}")
    print(f"  created {_when(run.created_at)}, finished {_when(run.finished_at) or '-'}")
    if run.url:
        print(f"  {run.url}")
    if run.error:
        print(f"  error: {run.error}")
    return EXIT_OK


def _when(moment: Any) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def _show(args: argparse.Namespace) -> int:
    if args.runtime == "kubeflow":
        return _show_kubeflow(args)
    from pipelines.local.history import list_runs, load_run

    runs_dir, _ = _dirs(args)
    run_id = args.run_id
    if run_id == "latest":
        newest = list_runs(runs_dir)
        run_id = newest[0].run_id if newest else run_id
    manifest = load_run(runs_dir, run_id)
    print(f"run {manifest['run_id']} ({manifest['name']}): {manifest['status']}")
    print(f"  started {manifest['started_at']}, ended {manifest.get('ended_at') or '-'}")
    rows = [("step", "status", "attempts", "error / log")]
    for node, record in manifest["nodes"].items():
        attempts = record.get("attempts") or []
        detail = record.get("error") or (attempts[-1]["log"] if attempts else "")
        rows.append((node, record["status"], str(len(attempts)), detail))
    print(_table(rows))
    for node, record in manifest["nodes"].items():
        for name in record.get("outputs") or {}:
            print(f"  {node}.{name}: {Path(runs_dir) / run_id / 'steps' / node / 'outputs' / name}")
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from pipelines.local.history import compare_runs

    runs_dir, _ = _dirs(args)
    diff, rows = compare_runs(runs_dir, args.first, args.second)
    print(diff or "configs are identical")
    table = [("metric", args.first, args.second, "delta")]
    for key, first, second, delta in rows:
        if first != second:
            table.append((key, _maybe(first), _maybe(second), _maybe(delta, signed=True)))
    print(_table(table) if len(table) > 1 else "metrics are identical")
    return EXIT_OK


def _clean(args: argparse.Namespace) -> int:
    from pipelines.local.history import clean_runs

    runs_dir, cache_dir = _dirs(args)
    result = clean_runs(runs_dir, cache_dir, args.keep, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"{verb} {len(result.removed_runs)} runs and {result.removed_entries} cache entries "
        f"({result.freed_bytes / 2**20:.1f} MiB)"
    )
    for run_id in result.kept_running:
        print(f"  kept {run_id}: still running")
    return EXIT_OK


def _maybe(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else number(value)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
