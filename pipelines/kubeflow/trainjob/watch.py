"""Watch a training job to its end: :func:`run_trainjob`.

It creates the resource with the kubernetes client's ``CustomObjectsApi``, polls it, logs
each new condition, returns when it completes and raises :class:`TrainJobError` when it
fails or runs past its timeout.

Clean-up policy: a job that **succeeded** is deleted (its result is on the shared volume;
its pods would hold nothing but logs); a job that **failed** is kept so that
``kubectl describe`` and the pods' logs can be read (the next attempt of the task replaces
it); a job that ran past the timeout, or whose task was interrupted, is deleted so that it
stops holding nodes. The job name is derived from the run and the step, so a retried task
(same run id) finds its job: one that already succeeded with the same spec is reused, one
still running is followed, any other is replaced. SIGTERM (how Kubernetes stops the task's
pod when a run is cancelled) counts as an interruption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pipelines.kubeflow.trainjob.build import JobKind, TrainJobError, job_kind

__all__ = ["MINIMUM_RELEASES", "job_state", "run_trainjob"]

log = logging.getLogger("kfbatch.trainjob")

_DIGEST_ANNOTATION = "kfbatch.io/spec-digest"
#: The oldest releases whose CRDs hold every field kfbatch sets (the vendored schemas').
MINIMUM_RELEASES = {
    "TrainJob": "Kubeflow Trainer v2.3.0",
    "PyTorchJob": "Kubeflow Training Operator v1.9",
}
#: What the API server says of a field its CRD lacks under strict field validation.
_UNKNOWN_FIELD = re.compile(r'unknown field "([^"]+)"')


def run_trainjob(
    manifest: Mapping[str, Any],
    namespace: str,
    timeout: float,
    *,
    api: Any = None,
    poll_s: float = 10.0,
    on_status: Callable[[str], None] | None = None,
    on_succeeded: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create ``manifest`` (a TrainJob or PyTorchJob) in ``namespace`` and wait for its end.

    Logs (and passes to ``on_status``) each condition the first time it is seen, as
    ``<Type>=<Status> <reason>: <message>``. See the module docstring for what is deleted.

    Args:
        manifest: From :func:`build_trainjob` or :func:`build_pytorchjob`.
        timeout: Seconds to wait for the job to end (> 0).
        api: A ``kubernetes.client.CustomObjectsApi``; by default one with the pod's
            in-cluster credentials, or the local kubeconfig outside a cluster.
        poll_s: Seconds between status reads (the first ones come sooner: 1 s, 2 s, ...).
        on_succeeded: Called once the job has succeeded, before it is deleted (the
            launcher records the success where a retried task finds it).

    Returns:
        The job as last read, with its ``status``.

    Raises:
        TrainJobError: it failed (with the failure's reason and message), ran past
            ``timeout``, or the API refused it.
    """
    from kubernetes.client.exceptions import ApiException

    kind = job_kind(manifest)
    name = manifest["metadata"]["name"]
    body = _with_digest({**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}})
    api = api if api is not None else _default_api()
    ref = f"{kind.kind} {namespace}/{name}"
    say = _reporter(on_status)
    previous = _sigterm_exits()  # a cancelled KFP run stops its pod with SIGTERM
    try:
        job = _create_or_adopt(api, kind, namespace, body, ref, say, sleep)
        deadline = time.monotonic() + timeout
        seen: set[tuple[str, str, str]] = set()
        delay = min(poll_s, 1.0)  # read early, then every poll_s: short jobs end sooner
        while True:
            state = _report_conditions(job, kind, seen, ref, say)
            if state == "succeeded":
                say(f"{ref}: succeeded")
                if on_succeeded is not None:
                    on_succeeded()
                _delete(api, kind, namespace, name)
                return job
            if state == "failed":
                raise TrainJobError(f"{ref} failed: {_failure(job, kind)} (kept for inspection)")
            if time.monotonic() >= deadline:
                _delete(api, kind, namespace, name)
                raise TrainJobError(f"{ref} did not finish within {timeout:g} s; deleted it")
            sleep(delay)
            delay = min(poll_s, delay * 2)
            job = _get(api, kind, namespace, name)
            if job is None:
                raise TrainJobError(f"{ref} disappeared while running (deleted by someone?)")
    except ApiException as error:
        hint = {
            403: f"; the pod's service account needs create, get and delete on {kind.plural}"
            f".{kind.group} (kfbatch manifests renders that Role)",
            404: f"; is {kind.kind} ({kind.api_version}) installed on this cluster?",
        }.get(error.status, "")
        unknown = _UNKNOWN_FIELD.search(_api_error(error)) if error.status in (400, 422) else None
        if unknown:
            hint = (
                f"; the cluster's {kind.kind} CRD has no field {unknown.group(1)}: kfbatch "
                f"needs {MINIMUM_RELEASES.get(kind.kind, 'a newer release')} or later"
            )
        raise TrainJobError(
            f"{ref}: the Kubernetes API answered {_api_error(error)}{hint}"
        ) from None
    except (KeyboardInterrupt, SystemExit):
        say(f"{ref}: interrupted; deleting it")
        _delete(api, kind, namespace, name)
        raise
    finally:
        _restore_sigterm(previous)


def _sigterm_exits() -> Any:
    """Make SIGTERM raise ``SystemExit`` (so the job is deleted); returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def exit_(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, exit_)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _default_api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:  # KUBECONFIG as it is now (the client reads it once, at import)
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except (config.ConfigException, OSError) as error:
            raise TrainJobError(
                "no Kubernetes credentials to create the training job: not in a cluster and "
                f"no usable kubeconfig ({error}); run the task in-cluster or set KUBECONFIG"
            ) from None
    return client.CustomObjectsApi()


def _reporter(on_status: Callable[[str], None] | None) -> Callable[[str], None]:
    def say(line: str) -> None:
        log.info("%s", line)
        if on_status is not None:
            on_status(line)

    return say


def _with_digest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest annotated with a digest of its spec, to recognise an identical job."""
    digest = hashlib.sha256(
        json.dumps(manifest["spec"], sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    meta = manifest["metadata"]
    annotations = {**meta.get("annotations", {}), _DIGEST_ANNOTATION: digest}
    return {**manifest, "metadata": {**meta, "annotations": annotations}}


def job_state(manifest: Mapping[str, Any], namespace: str, *, api: Any = None) -> str | None:
    """The state (``running``, ``succeeded``, ``failed``) of the job of ``manifest``'s name
    already in ``namespace`` with the same spec, or None when there is none (or it differs).

    A retried launcher asks this before it touches the job's staged data.
    """
    kind = job_kind(manifest)
    body = _with_digest(manifest)
    api = api if api is not None else _default_api()
    existing = _get(api, kind, namespace, manifest["metadata"]["name"])
    if existing is None or _digest(existing) != _digest(body):
        return None
    return _state(existing, kind)


def _digest(job: Mapping[str, Any]) -> str | None:
    return (job["metadata"].get("annotations") or {}).get(_DIGEST_ANNOTATION)


def _create(api: Any, kind: JobKind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create under strict field validation: a field the cluster's CRD lacks (an older
    release) is refused by the API server instead of silently pruned."""
    return api.create_namespaced_custom_object(
        kind.group, kind.version, namespace, kind.plural, body, field_validation="Strict"
    )


def _create_or_adopt(
    api: Any,
    kind: JobKind,
    namespace: str,
    body: dict[str, Any],
    ref: str,
    say: Callable[[str], None],
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """Follow the job of that name when it has the same spec and has not failed (a retried
    task's); otherwise replace it, or create it."""
    name = body["metadata"]["name"]
    existing = _get(api, kind, namespace, name)
    if existing is not None:
        same = _digest(existing) == _digest(body)
        state = _state(existing, kind)
        if same and state != "failed":
            say(f"{ref}: already exists with the same spec ({state}); following it")
            return existing
        say(f"{ref}: replacing an existing job ({state}, same spec: {same})")
        _delete(api, kind, namespace, name)
        for _ in range(60):
            if _get(api, kind, namespace, name) is None:
                break
            sleep(1.0)
        else:
            raise TrainJobError(f"{ref}: the previous job of that name is still being deleted")
    created = _create(api, kind, namespace, body)
    say(f"{ref}: created")
    return created


def _get(api: Any, kind: JobKind, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return api.get_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _delete(api: Any, kind: JobKind, namespace: str, name: str) -> None:
    """Delete the job and (in the background) its pods; a job already gone is fine."""
    from kubernetes.client import V1DeleteOptions
    from kubernetes.client.exceptions import ApiException

    try:
        api.delete_namespaced_custom_object(
            kind.group,
            kind.version,
            namespace,
            kind.plural,
            name,
            body=V1DeleteOptions(propagation_policy="Background"),
        )
    except ApiException as error:
        if error.status != 404:
            log.warning("could not delete %s %s/%s: %s", kind.kind, namespace, name, error)


def _conditions(job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((job.get("status") or {}).get("conditions") or [])


def _state(job: Mapping[str, Any], kind: JobKind) -> str:
    """``succeeded``, ``failed`` or ``running`` from the job's conditions."""
    true = {c.get("type") for c in _conditions(job) if c.get("status") == "True"}
    if kind.failed in true:
        return "failed"
    if kind.succeeded in true:
        return "succeeded"
    return "running"


def _report_conditions(
    job: Mapping[str, Any],
    kind: JobKind,
    seen: set[tuple[str, str, str]],
    ref: str,
    say: Callable[[str], None],
) -> str:
    for condition in _conditions(job):
        key = (
            str(condition.get("type")),
            str(condition.get("status")),
            str(condition.get("reason", "")),
        )
        if key in seen:
            continue
        seen.add(key)
        message = condition.get("message") or ""
        say(f"{ref}: {key[0]}={key[1]} {key[2]}".rstrip() + (f": {message}" if message else ""))
    return _state(job, kind)


def _failure(job: Mapping[str, Any], kind: JobKind) -> str:
    for condition in _conditions(job):
        if condition.get("type") == kind.failed and condition.get("status") == "True":
            reason = condition.get("reason") or "Failed"
            return f"{reason}: {condition.get('message') or 'no message'}"
    return "no failure condition"


def _api_error(error: Any) -> str:
    try:
        message = json.loads(error.body).get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return f"{error.status} {error.reason}" + (f": {message}" if message else "")
