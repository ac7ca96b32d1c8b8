"""An in-memory Kubernetes API for custom resources on 127.0.0.1 that records every request.

It implements the endpoints :func:`pipelines.kubeflow.trainjob.run_trainjob` reaches through
the kubernetes client's ``CustomObjectsApi``:

=======  =======================================================  ===============================
method   path                                                     CustomObjectsApi method
=======  =======================================================  ===============================
POST     /apis/{group}/{version}/namespaces/{ns}/{plural}         create_namespaced_custom_object
GET      /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}  get_namespaced_custom_object
DELETE   /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}  delete_namespaced_custom_object
=======  =======================================================  ===============================

Errors are ``Status`` objects with the API server's codes (404 NotFound, 409 AlreadyExists).
``on_create`` is called with each created object (a test plays the training pods there).
``unknown_fields`` plays an older CRD: under ``fieldValidation=Strict`` a create whose body
holds one of those dotted paths is refused with the API server's strict decoding error.
Each ``GET`` of an object moves its ``status.conditions`` one step along ``progress`` (a
list of condition lists; the last one stays), the way a controller would update it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeKubernetes", "condition"]

_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?$"
)


def _holds(body: Any, dotted: str) -> bool:
    """Whether ``body`` has a value at ``dotted`` (``spec.runtimePatches``)."""
    node = body
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def condition(type_: str, status: str = "True", reason: str = "", message: str = "") -> dict:
    """A status condition as Kubernetes controllers write them."""
    found = {"type": type_, "status": status, "lastTransitionTime": "2026-11-21T00:00:00Z"}
    if reason:
        found["reason"] = reason
    if message:
        found["message"] = message
    return found


@dataclass(frozen=True)
class Recorded:
    """One request: method, path and JSON body (None when it had none)."""

    method: str
    path: str
    body: Any


class FakeKubernetes:
    """The fake API server; use as a context manager, then :meth:`api` for a client."""

    def __init__(
        self,
        progress: Sequence[Sequence[dict]] = (),
        *,
        on_create: Callable[[dict[str, Any]], None] | None = None,
        unknown_fields: Sequence[str] = (),
    ) -> None:
        self.progress = [list(step) for step in progress]
        self.on_create = on_create
        self.unknown_fields = tuple(unknown_fields)
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self._reads: dict[tuple[str, str, str, str], int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeKubernetes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def api(self) -> Any:
        """A ``CustomObjectsApi`` talking to this server."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.CustomObjectsApi(client.ApiClient(configuration))

    def put(self, obj: dict[str, Any], plural: str, *, progressing: bool = False) -> None:
        """Store ``obj`` as if created earlier; its ``status`` stays as given, or with
        ``progressing`` moves along ``progress`` like a created object's."""
        group, version = obj["apiVersion"].split("/")
        meta = obj["metadata"]
        key = (group, version, meta["namespace"], f"{plural}/{meta['name']}")
        self.objects[key] = obj
        self._reads.pop(key, None)
        if progressing:
            self._reads[key] = 0

    def calls(self) -> list[tuple[str, str]]:
        """(method, path) of every request, in order."""
        return [(r.method, r.path) for r in self.requests]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._answer(
                    code,
                    {
                        "apiVersion": "v1",
                        "code": code,
                        "kind": "Status",
                        "message": message,
                        "metadata": {},
                        "reason": reason,
                        "status": "Failure",
                    },
                )

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                path, _, query = self.path.partition("?")
                strict = "fieldValidation=Strict" in query.split("&")
                with fake._lock:
                    fake.requests.append(Recorded(self.command, path, body))
                match = _PATH.match(path)
                if match is None:
                    self._status(
                        404, "NotFound", "the server could not find the requested resource"
                    )
                    return
                g, v, ns, plural, name = match.group("group", "version", "ns", "plural", "name")
                unknown = [f for f in fake.unknown_fields if _holds(body, f)] if strict else []
                if self.command == "POST" and unknown:
                    self._status(
                        400, "BadRequest", f'strict decoding error: unknown field "{unknown[0]}"'
                    )
                    return
                with fake._lock:
                    self._dispatch(g, v, ns, plural, name, body)

            def _dispatch(
                self, g: str, v: str, ns: str, plural: str, name: str | None, body: Any
            ) -> None:
                if name is None and self.command == "POST":
                    name = body["metadata"]["name"]
                    key = (g, v, ns, f"{plural}/{name}")
                    if key in fake.objects:
                        self._status(409, "AlreadyExists", f'{plural}.{g} "{name}" already exists')
                        return
                    stored = json.loads(json.dumps(body))
                    stored["metadata"].update({"namespace": ns, "uid": f"uid-{len(fake.requests)}"})
                    stored.setdefault("status", {})
                    fake.objects[key] = stored
                    fake._reads[key] = 0
                    if fake.on_create is not None:
                        fake.on_create(stored)
                    self._answer(201, stored)
                    return
                key = (g, v, ns, f"{plural}/{name}")
                if key not in fake.objects:
                    self._status(404, "NotFound", f'{plural}.{g} "{name}" not found')
                    return
                if self.command == "GET":
                    obj = fake.objects[key]
                    if fake.progress and key in fake._reads:
                        step = min(fake._reads[key], len(fake.progress) - 1)
                        obj["status"] = {"conditions": fake.progress[step]}
                        fake._reads[key] += 1
                    self._answer(200, obj)
                elif self.command == "DELETE":
                    del fake.objects[key]
                    fake._reads.pop(key, None)
                    self._answer(200, {"apiVersion": "v1", "kind": "Status", "status": "Success"})
                else:
                    self._status(405, "MethodNotAllowed", self.command)

            do_GET = do_POST = do_DELETE = _handle

        return Handler
