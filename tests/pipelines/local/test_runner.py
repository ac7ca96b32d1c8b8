"""The local runner: parallelism, caching and resume, retries, timeouts, crashes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.config.schema import RuntimeConfig
from pipelines.dag import RUN_DATE, RUN_ID, Dag, FanOut, Ref, Resources, Step
from pipelines.local.cache import external_digest
from pipelines.local.runner import run_dag

STEPS = "tests.support.steps"
SMALL = Resources(cpu=0.5, memory="256Mi")


def _step(name: str, function: str, params: dict, inputs: dict | None = None, **kw) -> Step:
    return Step(name, f"{STEPS}:{function}", params, inputs or {}, ("out",), SMALL, **kw)


def _windows(result, names: list[str]) -> list[dict]:
    return [json.loads((result.output(n, "out") / "window.json").read_text()) for n in names]


def test_chain_passes_outputs_and_records_a_manifest(runtime: RuntimeConfig) -> None:
    dag = Dag(
        "chain",
        (
            _step("a", "write", {"text": "A"}),
            _step("b", "write", {"text": f"B@{RUN_ID}"}, {"x": Ref("a", "out")}),
        ),
    )
    result = run_dag(dag, runtime, run_id="r1")
    assert result.ok
    assert (result.output("b", "out") / "data.txt").read_text() == "B@r1|A"
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    node = manifest["nodes"]["b"]
    assert node["status"] == "succeeded"
    assert node["attempts"][0]["status"] == "succeeded"
    assert node["inputs"]["x"] == manifest["nodes"]["a"]["outputs"]["out"]["digest"]
    assert Path(node["attempts"][0]["log"]).is_file()
    assert (Path(runtime.runs_dir) / "latest").resolve() == result.run_dir.resolve()


def test_the_run_date_is_substituted_and_a_new_date_runs_again(runtime: RuntimeConfig) -> None:
    def dated(run_date: str | None) -> Dag:
        return Dag("dated", (_step("p", "write", {"text": f"{RUN_DATE}"}),), run_date=run_date)

    first = run_dag(dated("2026-03-01"), runtime)
    assert (first.output("p", "out") / "data.txt").read_text() == "2026-03-01"
    assert json.loads((first.run_dir / "manifest.json").read_text())["run_date"] == "2026-03-01"
    assert run_dag(dated("2026-03-01"), runtime).nodes["p"].status == "cached"
    assert run_dag(dated("2026-03-02"), runtime).nodes["p"].status == "succeeded"
    today = run_dag(dated(None), runtime)
    text = (today.output("p", "out") / "data.txt").read_text()
    assert text == datetime.now(UTC).date().isoformat()


def test_independent_steps_overlap_in_time(runtime: RuntimeConfig) -> None:
    dag = Dag(
        "par",
        (_step("x", "sleep", {"seconds": 1.0, "item": "x"}), _step("y", "sleep", {"seconds": 1.0})),
    )
    result = run_dag(dag, runtime)
    x, y = _windows(result, ["x", "y"])
    assert x["pid"] != y["pid"]
    assert max(x["start"], y["start"]) < min(x["end"], y["end"])


def test_fan_out_respects_its_parallelism(runtime: RuntimeConfig) -> None:
    fan = FanOut("item", (0, 1, 2, 3), parallelism=2)
    dag = Dag("fan", (_step("s", "sleep", {"seconds": 0.6}, fan_out=fan),))
    result = run_dag(dag, runtime)
    windows = _windows(result, [f"s-{i}" for i in range(4)])
    for moment in [w["start"] + 0.01 for w in windows]:
        assert sum(w["start"] <= moment < w["end"] for w in windows) <= 2
    assert any(  # but two did overlap
        max(a["start"], b["start"]) < min(a["end"], b["end"])
        for i, a in enumerate(windows)
        for b in windows[i + 1 :]
    )


def test_cpu_requests_bound_concurrency(runtime: RuntimeConfig) -> None:
    runtime.cpus = 1.0
    heavy = Resources(cpu=1.0, memory="256Mi")
    dag = Dag(
        "cpu",
        (
            Step("x", f"{STEPS}:sleep", {"seconds": 0.5, "item": "x"}, {}, ("out",), heavy),
            Step("y", f"{STEPS}:sleep", {"seconds": 0.5}, {}, ("out",), heavy),
        ),
    )
    x, y = _windows(run_dag(dag, runtime), ["x", "y"])
    assert min(x["end"], y["end"]) <= max(x["start"], y["start"])


def test_identical_steps_run_once(runtime: RuntimeConfig) -> None:
    dag = Dag(
        "twins", (_step("x", "sleep", {"seconds": 0.3}), _step("y", "sleep", {"seconds": 0.3}))
    )
    result = run_dag(dag, runtime)
    assert sorted(r.status for r in result.nodes.values()) == ["cached", "succeeded"]
    assert result.output("x", "out").resolve() == result.output("y", "out").resolve()


def test_collected_fan_out_feeds_a_reduce_step(runtime: RuntimeConfig) -> None:
    fan = FanOut("item", ("p", "q", "r"), parallelism=3)
    dag = Dag(
        "reduce",
        (
            _step("s", "sleep", {"seconds": 0}, fan_out=fan),
            _step("all", "write", {"text": "all"}, {"parts": Ref("s", "out")}),
        ),
    )
    result = run_dag(dag, runtime)
    assert (result.output("all", "out") / "data.txt").read_text() == "all|p|q|r"


def _three_steps(marker: Path) -> Dag:
    return Dag(
        "resume",
        (
            _step("a", "write", {"text": "A"}),
            _step(
                "b", "fail_if_marker", {"text": "B", "marker": str(marker)}, {"x": Ref("a", "out")}
            ),
            _step("c", "write", {"text": "C"}, {"x": Ref("b", "out")}),
        ),
    )


def test_resume_after_failure_runs_only_the_failed_and_later_steps(
    runtime: RuntimeConfig, tmp_path: Path
) -> None:
    marker = tmp_path / "break-b"
    marker.touch()
    first = run_dag(_three_steps(marker), runtime)
    assert not first.ok
    assert [first.nodes[n].status for n in "abc"] == ["succeeded", "failed", "not_run"]
    assert "RuntimeError: marker" in first.nodes["b"].error
    assert "Traceback" in Path(first.nodes["b"].log_path).read_text()

    marker.unlink()
    second = run_dag(_three_steps(marker), runtime)
    assert second.ok
    assert [second.nodes[n].status for n in "abc"] == ["cached", "succeeded", "succeeded"]
    assert (second.output("c", "out") / "data.txt").read_text() == "C|B|A"

    third = run_dag(_three_steps(marker), runtime)
    assert [third.nodes[n].status for n in "abc"] == ["cached"] * 3
    forced = run_dag(_three_steps(marker), runtime, no_cache=True)
    assert [forced.nodes[n].status for n in "abc"] == ["succeeded"] * 3


def test_a_failed_attempt_leaves_no_cache_entry(runtime: RuntimeConfig, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    marker.touch()
    run_dag(Dag("d", (_step("b", "fail_if_marker", {"marker": str(marker)}),)), runtime)
    entries = list(Path(runtime.cache_dir).iterdir())
    assert [e.name for e in entries] == ["external.json"] or entries == []


def test_retries_then_success(runtime: RuntimeConfig, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    flaky = _step("flaky", "flaky", {"counter": str(counter), "fail_times": 2}, retries=2)
    dag = Dag("retry", (flaky,))
    result = run_dag(dag, runtime)
    assert result.ok
    attempts = result.nodes["flaky"].attempts
    assert [a["status"] for a in attempts] == ["failed", "failed", "succeeded"]
    assert all(Path(a["log"]).is_file() for a in attempts)


def test_data_errors_are_not_retried(runtime: RuntimeConfig) -> None:
    result = run_dag(Dag("d", (_step("bad", "bad_data", {}, retries=3),)), runtime)
    assert not result.ok
    assert len(result.nodes["bad"].attempts) == 1
    assert result.nodes["bad"].error.startswith("DataError: column 'x'")


@pytest.mark.fault
def test_timeout_kills_the_step(runtime: RuntimeConfig) -> None:
    dag = Dag("t", (_step("slow", "sleep", {"seconds": 30}, timeout_s=1.0),))
    started = time.monotonic()
    result = run_dag(dag, runtime)
    assert time.monotonic() - started < 10
    assert result.nodes["slow"].error == "timed out after 1s"
    _wait_until_gone(_worker_pid(Path(result.nodes["slow"].log_path)), timeout_s=1.0)


@pytest.mark.fault
def test_a_worker_that_dies_is_reported_and_retried(runtime: RuntimeConfig, tmp_path: Path) -> None:
    dag = Dag("crash", (_step("c", "die_once", {"marker": str(tmp_path / "died")}, retries=1),))
    result = run_dag(dag, runtime)
    assert result.ok
    first = result.nodes["c"].attempts[0]
    assert first["error"] == "worker process died (killed by SIGKILL)"


@pytest.mark.fault
@pytest.mark.slow
def test_killed_run_resumes_without_losing_finished_steps(tmp_path: Path) -> None:
    """SIGKILL the whole runner mid-pipeline; the next run reuses what had finished."""
    runs = str(tmp_path / "runs")
    command = [sys.executable, "-m", "tests.support.three_step_run", runs]
    first = subprocess.Popen([*command, "first", "30"])
    manifest = tmp_path / "runs" / "first" / "manifest.json"
    _wait_until_running(manifest, "b")
    log = Path(json.loads(manifest.read_text())["nodes"]["b"]["attempts"][0]["log"])
    worker_pid = _worker_pid(log)
    first.kill()  # the runner alone, as the OOM killer would: its workers must not outlive it
    first.wait()
    _wait_until_gone(worker_pid)
    killed = json.loads(manifest.read_text())
    assert killed["nodes"]["a"]["status"] == "succeeded"
    assert not list((tmp_path / "runs" / ".cache").glob("*/entry.json"))[1:]  # only a's entry

    second = subprocess.run([*command, "second", "0"], capture_output=True, text=True, check=True)
    assert second.stdout.strip() == "succeeded"
    resumed = json.loads((tmp_path / "runs" / "second" / "manifest.json").read_text())
    assert [resumed["nodes"][n]["status"] for n in "abc"] == ["cached", "succeeded", "succeeded"]
    assert not list((tmp_path / "runs" / ".cache").glob(".tmp-*"))  # b's partial attempt


def _worker_pid(log: Path) -> int:
    """The pid of the worker that runs a step, from the first line of its attempt log."""
    while not (found := re.search(r"\(pid (\d+)\)", log.read_text())):
        time.sleep(0.05)
    return int(found.group(1))


def _wait_until_gone(pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"worker {pid} outlived its runner")


def _wait_until_running(manifest: Path, node: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        nodes = json.loads(manifest.read_text())["nodes"] if manifest.exists() else {}
        if nodes.get(node, {}).get("status") == "running":
            return
        time.sleep(0.1)
    raise AssertionError(f"{node} never started")


@pytest.mark.fault
def test_interrupt_stops_workers_and_records_the_run(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    command = [sys.executable, "-m", "tests.support.three_step_run", runs, "int", "30"]
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "runs" / "int" / "manifest.json"
    _wait_until_running(manifest, "b")
    worker_pid = _worker_pid(
        Path(json.loads(manifest.read_text())["nodes"]["b"]["attempts"][0]["log"])
    )
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=30)
    assert "KeyboardInterrupt" in stderr
    final = json.loads(manifest.read_text())
    assert final["status"] == "interrupted"
    assert [final["nodes"][n]["status"] for n in "abc"] == ["succeeded", "interrupted", "not_run"]
    _wait_until_gone(worker_pid)
    assert not list((tmp_path / "runs" / ".cache").glob(".tmp-*"))


def test_outside_data_digests_follow_globs_and_object_stores(
    tmp_path: Path, s3_server: dict[str, Any]
) -> None:
    import pyarrow.fs as pafs

    memo = tmp_path / "external.json"
    (tmp_path / "day").mkdir()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "day" / name).write_text("id\n1\n")
    local = external_digest(f"{tmp_path}/day/*.csv", memo)
    (tmp_path / "day" / "notes.txt").write_text("not matched")
    assert external_digest(f"{tmp_path}/day/*.csv", memo) == local
    (tmp_path / "day" / "b.csv").write_text("id\n2\n")
    assert external_digest(f"{tmp_path}/day/*.csv", memo) != local

    fs = pafs.S3FileSystem(**s3_server)
    fs.create_dir("digest-in")
    for name, text in (("a.csv", b"id\n1\n"), ("b.csv", b"id\n2\n")):
        with fs.open_output_stream(f"digest-in/day/{name}") as f:
            f.write(text)
    storage = {k: v for k, v in s3_server.items() if k != "allow_bucket_creation"}
    remote = external_digest("s3://digest-in/day/*.csv", memo, storage)
    with fs.open_output_stream("digest-in/day/notes.txt") as f:
        f.write(b"not matched")
    assert external_digest("s3://digest-in/day/*.csv", memo, storage) == remote
    with fs.open_output_stream("digest-in/day/b.csv") as f:
        f.write(b"id\n2\n3\n")
    assert external_digest("s3://digest-in/day/*.csv", memo, storage) != remote
