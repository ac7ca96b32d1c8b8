"""Past runs: list, show, compare, clean (never touching a running run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config.schema import RuntimeConfig
from pipelines.dag import Dag, Ref, Resources, Step
from pipelines.local.history import clean_runs, compare_runs, list_runs, load_run
from pipelines.local.runner import run_dag

RES = Resources(cpu=0.5, memory="256Mi")


def _run(runtime: RuntimeConfig, run_id: str, text: str) -> None:
    dag = Dag(
        "hist",
        (
            Step("a", "tests.support.steps:write", {"text": text}, {}, ("out",), RES),
            Step(
                "b",
                "tests.support.steps:write",
                {"text": "b"},
                {"x": Ref("a", "out")},
                ("out",),
                RES,
            ),
        ),
    )
    assert run_dag(dag, runtime, run_id=run_id, config_yaml=f"text: {text}\n").ok


@pytest.fixture
def three_runs(runtime: RuntimeConfig) -> RuntimeConfig:
    for i, text in enumerate(["one", "two", "three!"]):
        _run(runtime, f"r{i}", text)
    return runtime


def test_list_is_newest_first_with_status_and_metric(three_runs: RuntimeConfig) -> None:
    runs = list_runs(three_runs.runs_dir)
    assert [r.run_id for r in runs] == ["r2", "r1", "r0"]
    assert {r.status for r in runs} == {"succeeded"}
    assert all(r.seconds is not None and r.seconds >= 0 for r in runs)


def test_compare_shows_config_diff_and_metric_deltas(three_runs: RuntimeConfig) -> None:
    diff, rows = compare_runs(three_runs.runs_dir, "r0", "r2")
    assert "-text: one" in diff
    assert "+text: three!" in diff
    deltas = {key: delta for key, _, _, delta in rows}
    assert deltas["a.chars"] == 3  # "three!" has three more characters than "one"


def test_clean_keeps_the_newest_runs_and_what_they_use(three_runs: RuntimeConfig) -> None:
    result = clean_runs(three_runs.runs_dir, three_runs.cache_dir, keep=1)
    assert result.removed_runs == ["r1", "r0"]
    assert result.removed_entries == 4  # a and b of runs "one" and "two"
    assert [r.run_id for r in list_runs(three_runs.runs_dir)] == ["r2"]
    kept = Path(three_runs.runs_dir) / "r2" / "steps" / "b" / "outputs" / "out" / "data.txt"
    assert kept.read_text() == "b|three!"
    again = run_dag(
        Dag(
            "hist", (Step("a", "tests.support.steps:write", {"text": "three!"}, {}, ("out",), RES),)
        ),
        three_runs,
    )
    assert again.nodes["a"].status == "cached"


def test_clean_never_touches_a_running_run(three_runs: RuntimeConfig) -> None:
    manifest_path = Path(three_runs.runs_dir) / "r0" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(status="running", pid=os.getpid())  # this process: alive
    manifest_path.write_text(json.dumps(manifest))
    before = sorted(p.name for p in Path(three_runs.cache_dir).iterdir())
    result = clean_runs(three_runs.runs_dir, three_runs.cache_dir, keep=0)
    assert result.kept_running == ["r0"]
    assert sorted(result.removed_runs) == ["r1", "r2"]
    assert result.removed_entries == 0  # a running run may be about to reuse any entry
    assert not (Path(three_runs.runs_dir) / "latest").is_symlink()  # it pointed at r2
    assert sorted(p.name for p in Path(three_runs.cache_dir).iterdir()) == before
    assert load_run(three_runs.runs_dir, "r0")["status"] == "running"


def test_a_run_whose_runner_died_shows_as_killed(three_runs: RuntimeConfig) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    manifest_path = Path(three_runs.runs_dir) / "r1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(status="running", pid=int(dead.stdout))
    manifest_path.write_text(json.dumps(manifest))
    assert load_run(three_runs.runs_dir, "r1")["status"] == "killed"
    assert clean_runs(three_runs.runs_dir, three_runs.cache_dir, keep=3).kept_running == []


def test_runs_verbs_on_the_command_line(kfbatch, three_runs: RuntimeConfig) -> None:
    runs_dir = three_runs.runs_dir
    listed = kfbatch("runs", "list", "--runs-dir", runs_dir)
    assert listed.code == 0
    assert listed.out.splitlines()[1].startswith("r2  ")
    shown = kfbatch("runs", "show", "latest", "--runs-dir", runs_dir)
    assert "run r2 (hist): succeeded" in shown.out
    assert f"a.out: {Path(runs_dir) / 'r2' / 'steps' / 'a' / 'outputs' / 'out'}" in shown.out
    compared = kfbatch("runs", "compare", "r0", "r1", "--runs-dir", runs_dir)
    assert "+text: two" in compared.out
    dry = kfbatch("runs", "clean", "--keep", "2", "--dry-run", "--runs-dir", runs_dir)
    assert "would remove 1 runs" in dry.out
    assert len(list_runs(runs_dir)) == 3
    missing = kfbatch("runs", "show", "nope", "--runs-dir", runs_dir)
    assert missing.code == 1
    assert "no run 'nope'" in missing.err
