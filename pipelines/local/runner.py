"""The embedded local runner: executes a DAG on this machine, in parallel, cached, resumable.

Each run lives in ``<runs_dir>/<run-id>/``: the composed config, ``dag.json``, a run
``manifest.json`` (rewritten atomically at every state change, so it is truthful even after a
kill), and ``steps/<node>/`` with one log per attempt, the metrics, and ``outputs/<name>``
links into the step cache. Nodes run as soon as their inputs exist, as many at once as their
CPU requests fit in the machine (``runtime.cpus``) and fan-out parallelism allows, on warm
worker processes. Re-running after a failure or a kill reuses every committed step result.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.names import DAG_FILE, RUN_ID_ENV, RUN_MANIFEST_FILE, STEP_ENV
from components.params import outside_storage_options
from pipelines.builder import build_dag
from pipelines.config.compose import ComposedConfig
from pipelines.config.schema import RuntimeConfig
from pipelines.config.secrets import Secret, redact
from pipelines.dag import RUN_DATE, RUN_ID, Dag, Node, Ref, Uri
from pipelines.errors import KfbatchError
from pipelines.execution import substitute
from pipelines.local.cache import StepCache, external_digest, step_key
from pipelines.local.pool import WorkerPool
from pipelines.local.records import (
    CACHED,
    DONE,
    FAILED,
    NOT_RUN,
    PENDING,
    RUNNING,
    SUCCEEDED,
    LogReporter,
    NodeRecord,
    Reporter,
    RunResult,
)
from pipelines.local.worker import StepOutcome, StepTask

__all__ = ["run_dag", "run_local"]

log = logging.getLogger("kfbatch.runner")

#: The manifest is rewritten at most this often while running (and always at the end), so
#: that fan-outs with hundreds of branches do not spend their time serialising it.
MANIFEST_INTERVAL_S = 0.5


def run_local(
    composed: ComposedConfig,
    *,
    no_cache: bool = False,
    run_id: str | None = None,
    reporter: Reporter | None = None,
    log_format: str = "text",
    smoke: bool = False,
) -> RunResult:
    """Run the pipeline of a composed config on this machine.

    Args:
        composed: The composed and validated config.
        no_cache: Execute every step even when a cached result exists (results are re-cached).
        run_id: Name of the run folder; a timestamped id by default.
        reporter: Progress sink; plain log lines by default.
        log_format: ``text`` or ``json`` (JSON lines) for the steps' log files.
        smoke: Mark the run as a smoke run (a sample of the data, set by the caller's config)
            in its id and manifest.
    """
    if smoke:
        run_id = run_id or f"{_new_run_id(composed.config.name)}-smoke"
    return run_dag(
        build_dag(composed.config),
        composed.config.runtime,
        config_yaml=composed.to_yaml(),
        secrets=composed.secrets,
        no_cache=no_cache,
        run_id=run_id,
        reporter=reporter,
        log_format=log_format,
        smoke=smoke,
    )


def run_dag(
    dag: Dag,
    runtime: RuntimeConfig,
    *,
    config_yaml: str = "",
    secrets: list[Secret] | None = None,
    no_cache: bool = False,
    run_id: str | None = None,
    reporter: Reporter | None = None,
    log_format: str = "text",
    smoke: bool = False,
) -> RunResult:
    """Execute ``dag`` with the local runner's settings ``runtime`` (see :func:`run_local`).

    ``secrets`` (the config's credentials) are redacted from every record the run writes.
    """
    secrets = secrets or []
    run_id = run_id or _new_run_id(dag.name)
    runs_dir = Path(runtime.runs_dir)
    run_dir = runs_dir / run_id
    runs_dir.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        raise KfbatchError(
            f"run folder {run_dir} already exists; choose another --run-id"
        ) from None
    (run_dir / "config.yaml").write_text(config_yaml)
    dag_record = redact(dag.to_dict(), secrets)
    (run_dir / DAG_FILE).write_text(json.dumps(dag_record, indent=2, sort_keys=True))
    _point_latest(runs_dir, run_id)
    execution = _Execution(
        dag,
        runtime,
        run_id,
        run_dir,
        no_cache,
        reporter or LogReporter(),
        log_format,
        smoke,
        secrets,
    )
    return execution.run()


def _new_run_id(name: str) -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{name}-{uuid.uuid4().hex[:4]}"


def _point_latest(runs_dir: Path, run_id: str) -> None:
    """Make ``<runs_dir>/latest`` a link to the newest run (replaced atomically)."""
    tmp = runs_dir / f".latest-{uuid.uuid4().hex[:8]}"
    tmp.symlink_to(run_id, target_is_directory=True)
    os.replace(tmp, runs_dir / "latest")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _Execution:
    """The state of one run: the scheduling loop and its bookkeeping."""

    def __init__(
        self,
        dag: Dag,
        runtime: RuntimeConfig,
        run_id: str,
        run_dir: Path,
        no_cache: bool,
        reporter: Reporter,
        log_format: str,
        smoke: bool,
        secrets: list[Secret],
    ) -> None:
        self.dag, self.runtime, self.run_id, self.run_dir = dag, runtime, run_id, run_dir
        self.no_cache, self.reporter, self.log_format = no_cache, reporter, log_format
        self.smoke = smoke
        self.secrets = secrets
        self.run_date = dag.run_date or datetime.now(UTC).date().isoformat()
        self.cache = StepCache(runtime.cache_dir)
        for path in self.cache.remove_abandoned():
            log.info("removed %s, left by a runner that no longer exists", path)
        self.nodes = {node.name: node for node in dag.nodes()}
        self.records = {
            name: NodeRecord(name, node.step.name, node.step.component)
            for name, node in self.nodes.items()
        }
        self.upstream = {
            name: [n for step in dag.upstream(node.step) for n in dag.node_names(step)]
            for name, node in self.nodes.items()
        }
        self.cpus = runtime.cpus or float(os.cpu_count() or 1)
        self.demand = {
            name: min(node.step.resources.cpu, self.cpus) for name, node in self.nodes.items()
        }
        self.pool = WorkerPool(self._max_parallel())
        self.staged: dict[str, Path] = {}
        self.deadlines: dict[str, float] = {}
        self.not_before: dict[str, float] = {}
        self.stopping = False
        self.started_at = _now()
        self.dag_digest = dag.digest()
        self.manifest_written_at = 0.0
        self.manifest_dirty = False

    def _max_parallel(self) -> int:
        if self.runtime.max_parallel:
            return self.runtime.max_parallel
        smallest = min(self.demand.values(), default=1.0)
        return max(1, min(64, int(self.cpus / smallest + 1e-9)))

    def run(self) -> RunResult:
        self._write_manifest(RUNNING)  # so that `kfbatch runs` sees the run from its start
        self.reporter.start(self.run_id, self.run_dir, self.records)
        status = FAILED
        try:
            self._loop()
            status = SUCCEEDED if all(r.status in DONE for r in self.records.values()) else FAILED
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            self.pool.close()
            for name in list(self.staged):
                self._abandon(name, "interrupted" if status == "interrupted" else FAILED)
            for record in self.records.values():
                if record.status == PENDING:
                    record.status = NOT_RUN
            result = RunResult(
                self.run_id, self.run_dir, status, self.records, self.dag, self.smoke
            )
            self._write_manifest(status)
            self.reporter.finish(result)
        return result

    def _loop(self) -> None:
        while True:
            if not self.stopping:
                self._dispatch_ready()
            running = self.pool.running()
            waiting = [
                n for n, r in self.records.items() if r.status == PENDING and n in self.not_before
            ]
            if not running and not (waiting and not self.stopping):
                return
            timeout = self._wait_timeout()
            if not running:
                time.sleep(timeout)
            for task, outcome in self.pool.wait(timeout):
                self._finish(task.node, outcome)
            self._enforce_timeouts()
            if (
                self.manifest_dirty
                and time.monotonic() - self.manifest_written_at >= MANIFEST_INTERVAL_S
            ):
                self._write_manifest(RUNNING)

    def _wait_timeout(self) -> float:
        now = time.monotonic()
        wakeups = [*self.deadlines.values(), *self.not_before.values()]
        if self.manifest_dirty:
            wakeups.append(self.manifest_written_at + MANIFEST_INTERVAL_S)
        return max(0.0, min([now + 1.0, *wakeups]) - now)

    def _dispatch_ready(self) -> None:
        progressed = True
        while progressed:
            progressed = False
            for name, record in self.records.items():
                if record.status != PENDING or not self._inputs_ready(name):
                    continue
                if self.not_before.get(name, 0.0) > time.monotonic():
                    continue
                if record.cache_key is None:
                    try:
                        self._prepare(name)
                    except Exception as error:  # e.g. an input that does not exist
                        self._fail_before_start(record, _one_line(error))
                        return
                if self._reuse_cached(name):
                    progressed = True
                    continue
                if self._twin_running(name):
                    continue  # same key as a running node: reuse its result when it lands
                if self._fits(name):
                    self._launch(name)
                    progressed = True

    def _inputs_ready(self, name: str) -> bool:
        return all(self.records[up].status in DONE for up in self.upstream[name])

    def _prepare(self, name: str) -> None:
        """Resolve input paths and digests, then compute the node's cache key."""
        node, record = self.nodes[name], self.records[name]
        digests: dict[str, Any] = {}
        for input_name, source in node.step.inputs.items():
            if isinstance(source, Uri):
                digests[input_name] = external_digest(
                    source.uri,
                    self.cache.root / "external.json",
                    outside_storage_options(node.params),  # how the step reaches the store
                )
            else:
                ups = [self.records[n] for n in self.dag.node_names(source.step)]
                values = [up.outputs[source.output]["digest"] for up in ups]
                digests[input_name] = values if self._collected(source) else values[0]
        record.inputs = digests
        record.cache_key = step_key(node.step.component, self._dated(node.params), digests)

    def _dated(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with the run date in place of :data:`RUN_DATE`."""
        return substitute(params, RUN_DATE, self.run_date)

    def _collected(self, source: Ref) -> bool:
        return self.dag.step(source.step).fan_out is not None

    def _reuse_cached(self, name: str) -> bool:
        node, record = self.nodes[name], self.records[name]
        if self.no_cache or not node.step.cache:
            return False
        entry = self.cache.get(record.cache_key)
        if entry is None:
            return False
        self._link_outputs(name, entry.path, entry.outputs)
        record.metrics = entry.metrics
        record.status = CACHED
        record.started_at = record.ended_at = _now()
        self._changed(record)
        return True

    def _twin_running(self, name: str) -> bool:
        key = self.records[name].cache_key
        return any(self.records[n].cache_key == key for n in self.pool.running())

    def _fits(self, name: str) -> bool:
        if not self.pool.has_capacity():
            return False
        running = self.pool.running()
        used = sum(self.demand[n] for n in running)
        if running and used + self.demand[name] > self.cpus + 1e-9:
            return False
        fan_out = self.nodes[name].step.fan_out
        if fan_out is not None:
            siblings = sum(1 for n in running if self.nodes[n].step is self.nodes[name].step)
            return siblings < fan_out.parallelism
        return True

    def _launch(self, name: str) -> None:
        node, record = self.nodes[name], self.records[name]
        attempt = len(record.attempts) + 1
        step_dir = self.run_dir / "steps" / name
        step_dir.mkdir(parents=True, exist_ok=True)
        staged = self.cache.stage(record.cache_key, attempt)
        self.staged[name] = staged
        log_path = step_dir / f"attempt-{attempt}.log"
        record.attempts.append({"attempt": attempt, "started_at": _now(), "log": str(log_path)})
        record.started_at = record.started_at or record.attempts[-1]["started_at"]
        record.status = RUNNING
        task = StepTask(
            node=name,
            component=node.step.component,
            inputs=self._input_paths(node),
            params=substitute(self._dated(node.params), RUN_ID, self.run_id),
            outputs={out: str((staged / "outputs" / out).resolve()) for out in node.step.outputs},
            log_path=str(log_path.resolve()),
            threads=max(1, min(node.step.resources.threads, int(self.cpus))),
            env={RUN_ID_ENV: self.run_id, STEP_ENV: name},
            log_format=self.log_format,
            context={"run_id": self.run_id, "step": name, "attempt": attempt},
        )
        self.pool.submit(task)
        self.not_before.pop(name, None)
        if node.step.timeout_s:
            self.deadlines[name] = time.monotonic() + node.step.timeout_s
        self._changed(record)

    def _input_paths(self, node: Node) -> dict[str, str | list[str]]:
        paths: dict[str, str | list[str]] = {}
        for input_name, source in node.step.inputs.items():
            if isinstance(source, Uri):
                uri = source.uri
                paths[input_name] = uri if "://" in uri else str(Path(uri).resolve())
                continue
            found = [
                self.records[n].outputs[source.output]["path"]
                for n in self.dag.node_names(source.step)
            ]
            paths[input_name] = found if self._collected(source) else found[0]
        return paths

    def _finish(self, name: str, outcome: StepOutcome) -> None:
        node, record = self.nodes[name], self.records[name]
        self.deadlines.pop(name, None)
        attempt = record.attempts[-1]
        attempt.update(ended_at=_now(), seconds=round(outcome.seconds, 3))
        staged = self.staged.pop(name)
        if outcome.ok:
            try:
                entry = self.cache.commit(
                    record.cache_key, staged, node.step.outputs, outcome.metrics
                )
            except Exception as error:  # a broken contract is a failed attempt, not a crash
                outcome = StepOutcome(False, error=str(error), seconds=outcome.seconds)
            else:
                attempt["status"] = SUCCEEDED
                self._link_outputs(name, entry.path, entry.outputs)
                record.metrics = entry.metrics
                (self.run_dir / "steps" / name / "metrics.json").write_text(
                    json.dumps(entry.metrics, indent=2, sort_keys=True, default=str)
                )
                record.status, record.ended_at, record.error = SUCCEEDED, _now(), None
                self._changed(record)
                return
        self.cache.discard(staged)
        error = redact(outcome.error, self.secrets)
        attempt.update(status=FAILED, error=error)
        record.error = error
        retryable = not outcome.permanent and len(record.attempts) <= node.step.retries
        if retryable and not self.stopping:
            backoff = self.runtime.retry_backoff_s * 2 ** (len(record.attempts) - 1)
            self.not_before[name] = time.monotonic() + backoff
            record.status = PENDING
            log.warning(
                "step %s: attempt %d failed (%s); retrying in %.1fs",
                name,
                len(record.attempts),
                error,
                backoff,
                extra={"run_id": self.run_id, "step": name, "attempt": len(record.attempts)},
            )
        else:
            record.status, record.ended_at = FAILED, _now()
            self.stopping = True
        self._changed(record)

    def _fail_before_start(self, record: NodeRecord, error: str) -> None:
        record.status, record.error, record.ended_at = FAILED, error, _now()
        self.stopping = True
        self._changed(record)

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        for name, deadline in list(self.deadlines.items()):
            if now >= deadline:
                self.pool.kill(name)
                limit = self.nodes[name].step.timeout_s
                self._finish(name, StepOutcome(False, error=f"timed out after {limit:g}s"))

    def _abandon(self, name: str, status: str) -> None:
        self.cache.discard(self.staged.pop(name))
        record = self.records[name]
        record.status, record.ended_at = status, _now()
        if record.attempts:
            record.attempts[-1].update(status=status, ended_at=record.ended_at)

    def _link_outputs(self, name: str, entry_path: Path, digests: Mapping[str, str]) -> None:
        outputs_dir = self.run_dir / "steps" / name / "outputs"
        outputs_dir.mkdir(parents=True, exist_ok=True)
        record = self.records[name]
        for output, digest in digests.items():
            target = (entry_path / "outputs" / output).resolve()
            link = outputs_dir / output
            if link.is_symlink():
                link.unlink()
            link.symlink_to(target, target_is_directory=target.is_dir())
            record.outputs[output] = {"path": str(target), "digest": digest}

    def _changed(self, record: NodeRecord) -> None:
        self.manifest_dirty = True
        self.reporter.update(record)

    def _write_manifest(self, status: str) -> None:
        manifest = {
            "run_id": self.run_id,
            "name": self.dag.name,
            "status": status,
            "run_date": self.run_date,
            "started_at": self.started_at,
            "ended_at": None if status == RUNNING else _now(),
            "dag_digest": self.dag_digest,
            "smoke": self.smoke,
            "pid": os.getpid(),
            "argv": sys.argv,
            "nodes": {name: asdict(record) for name, record in self.records.items()},
        }
        manifest = redact(manifest, self.secrets)
        tmp = self.run_dir / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        os.replace(tmp, self.run_dir / RUN_MANIFEST_FILE)
        self.manifest_written_at, self.manifest_dirty = time.monotonic(), False


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if isinstance(error, KfbatchError) else f"{type(error).__name__}: {text}"
