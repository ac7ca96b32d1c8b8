"""An in-memory KFP v2beta1 REST API on 127.0.0.1 that records every request.

It implements exactly the endpoints that ``pipelines.kubeflow.client`` reaches through kfp
2.17's ``kfp.Client`` (read from ``kfp/client/client.py`` and ``kfp_server_api/api``):

============  ==========================================  ===================================
method        path                                        kfp.Client method
============  ==========================================  ===================================
GET           /apis/v2beta1/healthz                       get_kfp_healthz (and its constructor)
POST          /apis/v2beta1/pipelines/upload              upload_pipeline (multipart)
POST          /apis/v2beta1/pipelines/upload_version      upload_pipeline_version (multipart)
GET           /apis/v2beta1/pipelines                     list_pipelines (filter, namespace)
GET           /apis/v2beta1/pipelines/{id}/versions       list_pipeline_versions (paged)
GET, POST     /apis/v2beta1/experiments                   list_experiments, create_experiment
POST          /apis/v2beta1/runs                          run_pipeline
GET           /apis/v2beta1/runs                          list_runs (experiment_id, sort_by)
GET           /apis/v2beta1/runs/{id}                     get_run (advances the run's state)
GET, POST     /apis/v2beta1/recurringruns                 list_recurring_runs, create_recurring_run
DELETE        /apis/v2beta1/recurringruns/{id}            delete_recurring_run
============  ==========================================  ===================================

Anything else answers ``404 page not found`` as text, like the Go server. Bodies use KFP's
snake_case JSON names; errors look like grpc-gateway's (``{"error", "code", "message"}``).
Each ``GET /runs/{id}`` moves the run one step along ``run_states``. With ``token`` set, a
request without ``Authorization: Bearer <token>`` gets 401. ``inject`` makes chosen requests
answer with a given status. The server runs in a daemon thread and stops on leaving the
``with`` block, or by itself after ``lifetime_s``.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

__all__ = ["FakeKfp", "Recorded"]

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_TERMINAL = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}
_PREFIX = "/apis/v2beta1"


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        """The JSON body."""
        return json.loads(self.body)

    def files(self) -> dict[str, tuple[str, bytes]]:
        """The multipart form parts: name -> (file name, exact content)."""
        match = re.search(r'boundary="?([^";]+)"?', self.headers.get("content-type", ""))
        if match is None:
            return {}
        parts: dict[str, tuple[str, bytes]] = {}
        for part in self.body.split(b"--" + match.group(1).encode())[1:-1]:
            head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
            disposition = head.decode("latin-1")
            name = re.search(r'\bname="([^"]*)"', disposition)
            filename = re.search(r'filename="([^"]*)"', disposition)
            if name is not None:
                parts[name.group(1)] = (
                    filename.group(1) if filename else "",
                    content.removesuffix(b"\r\n"),
                )
        return parts


@dataclass
class _Injected:
    method: str
    path: re.Pattern[str]
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]
    times: int


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}


class FakeKfp:
    """The fake KFP API server (use as a context manager).

    Args:
        token: Bearer token every request must carry; None accepts any request.
        multi_user: What the health check reports; in multi-user mode listing experiments
            requires a namespace, as in KFP.
        run_states: States a run goes through, one per ``GET /runs/{id}`` (the last repeats).
        lifetime_s: The server stops by itself after this long.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        multi_user: bool = False,
        run_states: Sequence[str] = ("PENDING", "RUNNING", "SUCCEEDED"),
        lifetime_s: float = 60.0,
    ) -> None:
        self.token = token
        self.multi_user = multi_user
        self.run_states = tuple(run_states)
        self.requests: list[Recorded] = []
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self._polls: dict[str, int] = {}
        self._injected: list[_Injected] = []
        self._ids = itertools.count(1)
        self._ticks = itertools.count(1)
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._serve, name="fake-kfp", daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True
        self._started = self._stopped = False
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., _Response]]] = [
            ("GET", re.compile(r"/healthz"), self._healthz),
            ("POST", re.compile(r"/pipelines/upload"), self._upload),
            ("POST", re.compile(r"/pipelines/upload_version"), self._upload_version),
            ("GET", re.compile(r"/pipelines"), self._list_pipelines),
            ("GET", re.compile(r"/pipelines/([^/]+)/versions"), self._list_versions),
            ("GET", re.compile(r"/experiments"), self._list_experiments),
            ("POST", re.compile(r"/experiments"), self._create_experiment),
            ("POST", re.compile(r"/runs"), self._create_run),
            ("GET", re.compile(r"/runs"), self._list_runs),
            ("GET", re.compile(r"/runs/([^/:]+)"), self._get_run),
            ("GET", re.compile(r"/recurringruns"), self._list_recurring),
            ("POST", re.compile(r"/recurringruns"), self._create_recurring),
            ("DELETE", re.compile(r"/recurringruns/([^/:]+)"), self._delete_recurring),
        ]

    def __enter__(self) -> FakeKfp:
        self._started = True
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._timer.cancel()
        if self._started:
            self._server.shutdown()
        self._server.server_close()

    def inject(
        self,
        method: str,
        path: str,
        status: int,
        body: str | bytes = b"",
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``path`` (a regex)."""
        data = body.encode() if isinstance(body, str) else body
        pattern = re.compile(path)
        self._injected.append(
            _Injected(method, pattern, status, data, content_type, headers or {}, times)
        )

    def fail(self, method: str, path: str, status: int, message: str, *, times: int = 1) -> None:
        """Answer matching requests with a KFP-style JSON error."""
        self.inject(method, path, status, _error_body(status, message), times=times)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally only those with this method and exact path."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=0.05)

    def handle(self, request: Recorded) -> _Response:
        """Record and answer one request."""
        with self._lock:
            self.requests.append(request)
            for injected in self._injected:
                if (
                    injected.times > 0
                    and injected.method == request.method
                    and injected.path.fullmatch(request.path)
                ):
                    injected.times -= 1
                    return _Response(
                        injected.status, injected.body, injected.content_type, injected.headers
                    )
            if self.token is not None and (
                request.headers.get("authorization") != f"Bearer {self.token}"
            ):
                return _Response(401, _error_body(401, "Unauthenticated: bad or missing token"))
            if not request.path.startswith(_PREFIX):
                return _Response(404, b"404 page not found", "text/plain")
            path = request.path.removeprefix(_PREFIX)
            for method, pattern, handler in self._routes:
                match = pattern.fullmatch(path)
                if method == request.method and match is not None:
                    try:
                        return handler(request, *match.groups())
                    except _ApiError as error:
                        return _Response(error.status, _error_body(error.status, error.message))
            return _Response(404, b"404 page not found", "text/plain")

    # --- endpoints -------------------------------------------------------------------------

    def _healthz(self, request: Recorded) -> _Response:
        return _json({"multi_user": self.multi_user, "pipeline_store": "database"})

    def _upload(self, request: Recorded) -> _Response:
        filename, content = _uploaded(request)
        name = request.query.get("name") or filename.rsplit(".", 1)[0]
        namespace = self._namespace(request.query.get("namespace", ""))
        if any(
            p["display_name"] == name and p["namespace"] == namespace
            for p in self.pipelines.values()
        ):
            raise _ApiError(409, "Failed to create a pipeline and a pipeline version")
        description = request.query.get("description", "")
        pipeline = {
            "pipeline_id": self._id("pipeline"),
            "name": name,
            "display_name": name,
            "description": description,
            "namespace": namespace,
            "created_at": self._now(),
        }
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self._add_version(pipeline["pipeline_id"], name, description, content)
        return _json(pipeline)

    def _upload_version(self, request: Recorded) -> _Response:
        _, content = _uploaded(request)
        pipeline_id = request.query.get("pipelineid", "")
        if pipeline_id not in self.pipelines:
            raise _ApiError(404, f"Pipeline {pipeline_id!r} not found")
        name = request.query.get("name", "")
        if any(
            v["pipeline_id"] == pipeline_id and v["display_name"] == name
            for v in self.versions.values()
        ):
            raise _ApiError(409, "Failed to create a pipeline version")
        version = self._add_version(
            pipeline_id, name, request.query.get("description", ""), content
        )
        return _json(version)

    def _list_pipelines(self, request: Recorded) -> _Response:
        namespace = self._namespace(request.query.get("namespace", ""))
        found = [p for p in self.pipelines.values() if p["namespace"] == namespace]
        return _page("pipelines", _filtered(found, request.query.get("filter")), request.query)

    def _list_versions(self, request: Recorded, pipeline_id: str) -> _Response:
        if pipeline_id not in self.pipelines:
            raise _ApiError(404, f"Pipeline {pipeline_id!r} not found")
        found = [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]
        return _page(
            "pipeline_versions", _filtered(found, request.query.get("filter")), request.query
        )

    def _list_experiments(self, request: Recorded) -> _Response:
        namespace = request.query.get("namespace", "")
        if self.multi_user and not namespace:
            raise _ApiError(400, "In multi-user mode, ListExperiment requires a namespace")
        namespace = self._namespace(namespace)
        found = [e for e in self.experiments.values() if e["namespace"] == namespace]
        return _page("experiments", _filtered(found, request.query.get("filter")), request.query)

    def _create_experiment(self, request: Recorded) -> _Response:
        body = request.json()
        namespace = self._namespace(body.get("namespace") or "")
        name = body.get("display_name") or ""
        if any(
            e["display_name"] == name and e["namespace"] == namespace
            for e in self.experiments.values()
        ):
            raise _ApiError(409, f"Experiment {name!r} already exists")
        experiment = {
            "experiment_id": self._id("experiment"),
            "display_name": name,
            "description": body.get("description") or "",
            "namespace": namespace,
            "storage_state": "AVAILABLE",
            "created_at": self._now(),
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return _json(experiment)

    def _create_run(self, request: Recorded) -> _Response:
        body = request.json()
        self._check_references(body)
        run = {
            "run_id": self._id("run"),
            "display_name": body.get("display_name") or "",
            "experiment_id": body["experiment_id"],
            "pipeline_version_reference": body["pipeline_version_reference"],
            "runtime_config": body.get("runtime_config") or {},
            "service_account": body.get("service_account") or "",
            "storage_state": "AVAILABLE",
            "state": "PENDING",
            "created_at": self._now(),
            "finished_at": "1970-01-01T00:00:00Z",
        }
        self.runs[run["run_id"]] = run
        self._polls[run["run_id"]] = 0
        return _json(run)

    def _get_run(self, request: Recorded, run_id: str) -> _Response:
        run = self.runs.get(run_id)
        if run is None:
            raise _ApiError(404, f"Run {run_id} not found")
        if run_id in self._polls and run["state"] not in _TERMINAL:
            step = self._polls[run_id]
            self._polls[run_id] = step + 1
            run["state"] = self.run_states[min(step, len(self.run_states) - 1)]
            if run["state"] in _TERMINAL:
                run["finished_at"] = self._now()
            if run["state"] == "FAILED":
                run["error"] = {"code": 2, "message": "task 'train' failed: exit code 1"}
        return _json(run)

    def _list_runs(self, request: Recorded) -> _Response:
        experiment_id = request.query.get("experiment_id")
        found = [r for r in self.runs.values() if experiment_id in (None, r["experiment_id"])]
        return _page("runs", _filtered(found, request.query.get("filter")), request.query)

    def _create_recurring(self, request: Recorded) -> _Response:
        body = request.json()
        self._check_references(body)
        cron = ((body.get("trigger") or {}).get("cron_schedule") or {}).get("cron", "")
        if len(cron.split()) not in (5, 6):
            raise _ApiError(400, f"Invalid cron expression {cron!r}")
        recurring = {
            **body,
            "recurring_run_id": self._id("recurring"),
            "status": "ENABLED" if body.get("mode") == "ENABLE" else "DISABLED",
            "created_at": self._now(),
        }
        self.recurring_runs[recurring["recurring_run_id"]] = recurring
        return _json(recurring)

    def _list_recurring(self, request: Recorded) -> _Response:
        experiment_id = request.query.get("experiment_id")
        found = [
            r for r in self.recurring_runs.values() if experiment_id in (None, r["experiment_id"])
        ]
        # KFP's proto names this list field recurringRuns (the others are snake_case).
        return _page("recurringRuns", _filtered(found, request.query.get("filter")), request.query)

    def _delete_recurring(self, request: Recorded, recurring_id: str) -> _Response:
        if self.recurring_runs.pop(recurring_id, None) is None:
            raise _ApiError(404, f"Recurring run {recurring_id} not found")
        return _json({})

    # --- helpers ---------------------------------------------------------------------------

    def _add_version(
        self, pipeline_id: str, name: str, description: str, content: bytes
    ) -> dict[str, Any]:
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": self._id("version"),
            "name": name,
            "display_name": name,
            "description": description,
            "created_at": self._now(),
            "pipeline_spec": next(iter(yaml.safe_load_all(content)), None),
        }
        self.versions[version["pipeline_version_id"]] = version
        return version

    def _check_references(self, body: dict[str, Any]) -> None:
        if body.get("experiment_id") not in self.experiments:
            raise _ApiError(404, f"Experiment {body.get('experiment_id')!r} not found")
        reference = body.get("pipeline_version_reference") or {}
        version = self.versions.get(reference.get("pipeline_version_id", ""))
        if version is None or version["pipeline_id"] != reference.get("pipeline_id"):
            raise _ApiError(404, f"Pipeline version {reference!r} not found")

    def _namespace(self, namespace: str) -> str:
        return namespace if self.multi_user else ""  # KFP ignores namespaces in single-user mode

    def _id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def _now(self) -> str:
        return (_EPOCH + timedelta(seconds=next(self._ticks))).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeKfp


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.server.fake.handle(Recorded(self.command, url.path, query, headers, body))
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


def _json(payload: Any) -> _Response:
    return _Response(200, json.dumps(payload).encode())


def _error_body(status: int, message: str) -> bytes:
    code = _GRPC_CODES.get(status, 2)
    return json.dumps({"error": message, "code": code, "message": message, "details": []}).encode()


def _uploaded(request: Recorded) -> tuple[str, bytes]:
    files = request.files()
    if "uploadfile" not in files:
        raise _ApiError(400, "Failed to read pipeline from file")
    return files["uploadfile"]


def _filtered(items: list[dict[str, Any]], filter_text: str | None) -> list[dict[str, Any]]:
    """Apply a KFP filter; only EQUALS on display_name, which is all the client sends."""
    if not filter_text:
        return items
    for predicate in json.loads(filter_text).get("predicates", []):
        value = predicate.get("stringValue", predicate.get("string_value"))
        if (
            predicate.get("operation") not in ("EQUALS", 1)
            or predicate.get("key") != "display_name"
            or value is None
        ):
            raise _ApiError(400, f"Unsupported filter predicate {predicate!r}")
        items = [item for item in items if item["display_name"] == value]
    return items


def _page(key: str, items: list[dict[str, Any]], query: dict[str, str]) -> _Response:
    """One page of a list response (page_token is an offset), sorted as asked."""
    descending = query.get("sort_by") == "created_at desc"
    items = sorted(items, key=lambda item: item["created_at"], reverse=descending)
    start = int(query.get("page_token") or 0)
    size = int(query.get("page_size") or 10)
    page = items[start : start + size]
    payload: dict[str, Any] = {"total_size": len(items)}
    if page:
        payload[key] = page  # protojson leaves empty lists out, and kfp reads them as None
    if start + size < len(items):
        payload["next_page_token"] = str(start + size)
    return _json(payload)
