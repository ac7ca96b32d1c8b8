"""Submit, schedule and inspect the pipeline on Kubeflow Pipelines (KFP v2 API) with kfp.Client.

Entry points for the CLI: :func:`submit_run` (``kfbatch submit``), :func:`create_schedule`
(``kfbatch schedule``), :func:`list_runs`, :func:`get_run` and :func:`wait_for_run`
(``kfbatch runs``). :class:`KfpClient` holds one connection for callers that do several things.
They return small dataclasses (:class:`RunInfo`, :class:`PipelineVersion`,
:class:`Submission`, :class:`RecurringRunInfo`), never kfp-server-api models.

Connection, from ``config.kubeflow``: the API URL is ``host``, else the ``KFP_HOST``
environment variable, else (``in_cluster`` only) the in-cluster ``ml-pipeline`` service. With
``in_cluster: true`` requests carry the pod's credentials, re-read from disk on every request
because the kubelet rotates them: KFP's projected token (``KF_PIPELINES_SA_TOKEN_PATH``, by
default ``/var/run/secrets/kubeflow/pipelines/token``) when mounted, else the pod's
service-account token. Otherwise they carry the bearer token held by the environment variable
that ``token_env`` names, when it is set, and no credentials when it is not. Tokens are never
logged nor put in messages.

Pipelines are uploaded once per content. A version is named ``<name>-<sha256[:12]>`` after the
YAML bytes and its description records the full digest, so submitting the same YAML again
reuses its version (the first upload creates the pipeline, whose first version KFP names after
the pipeline; the digest in its description identifies it).

Every failure is a :class:`KubeflowError` (a ``KfbatchError``) whose message is one line naming
the host and what to do. Requests have a timeout and are neither retried nor redirected (a
redirect is usually a login page, reported as such).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import kfp_server_api
import urllib3
import yaml
from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH, Client
from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

from pipelines.config.cron import recurring_cron
from pipelines.config.schema import Config, KubeflowConfig
from pipelines.errors import ConfigError, KfbatchError

__all__ = [
    "HOST_ENV",
    "TERMINAL_STATES",
    "KfpClient",
    "KubeflowAuthError",
    "KubeflowError",
    "KubeflowNotFound",
    "KubeflowTimeout",
    "KubeflowUnreachable",
    "PipelinePackage",
    "PipelineVersion",
    "RecurringRunInfo",
    "RunInfo",
    "Submission",
    "create_schedule",
    "get_run",
    "list_runs",
    "submit_run",
    "wait_for_run",
]

logger = logging.getLogger(__name__)

#: Environment variable read when ``kubeflow.host`` is null.
HOST_ENV = "KFP_HOST"
#: The KFP API inside the cluster (``in_cluster`` without a host).
IN_CLUSTER_HOST = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
#: The pod's own service-account token, used in-cluster when no KFP token is mounted.
POD_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
#: Run states after which a run never changes again.
TERMINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})

_CONNECT_TIMEOUT_S = 10.0
_TRANSIENT_STATUS = frozenset({502, 503, 504})
_TRANSIENT_TRIES = 3
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PORT_FORWARD = (
    "e.g. `kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888` "
    "with kubeflow.host=http://localhost:8888"
)

T = TypeVar("T")


class KubeflowError(KfbatchError):
    """KFP refused a request, failed, or could not be reached; the message says what to do.

    Args:
        message: One line naming the host and what to do.
        status: The HTTP status, when the API answered.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeflowUnreachable(KubeflowError):
    """No answer from the KFP API: connection refused, unknown host, timeout, TLS failure."""


class KubeflowAuthError(KubeflowError):
    """The KFP API wants credentials (401, or a redirect to a login page) or denies access (403)."""


class KubeflowNotFound(KubeflowError):
    """The requested object (or the API path itself) does not exist (404)."""


class KubeflowTimeout(KubeflowError):
    """A run did not reach a terminal state in time; ``run`` is its last known state."""

    def __init__(self, message: str, *, run: RunInfo) -> None:
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class RunInfo:
    """One KFP run, as kfbatch reports it.

    Attributes:
        run_id: KFP's run id.
        name: The run's display name.
        state: KFP's runtime state: PENDING, RUNNING, SUCCEEDED, SKIPPED, FAILED, CANCELING,
            CANCELED, PAUSED or RUNTIME_STATE_UNSPECIFIED.
        created_at: When the run was created.
        finished_at: When it finished, if it did.
        url: The run's page in the Kubeflow Pipelines UI, when the host is known.
        error: KFP's error message for a failed run.
    """

    run_id: str
    name: str
    state: str
    created_at: datetime | None
    finished_at: datetime | None
    url: str | None
    error: str | None = None

    @property
    def done(self) -> bool:
        """Whether the run is in a terminal state."""
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        """Whether the run succeeded."""
        return self.state == "SUCCEEDED"


@dataclass(frozen=True)
class PipelineVersion:
    """The pipeline version a run or recurring run uses.

    Attributes:
        pipeline_id: KFP's pipeline id.
        version_id: KFP's pipeline version id.
        name: The version's display name.
        reused: True when an identical version already existed and nothing was uploaded.
        url: The version's page in the UI, when the host is known.
    """

    pipeline_id: str
    version_id: str
    name: str
    reused: bool
    url: str | None


@dataclass(frozen=True)
class Submission:
    """What ``kfbatch submit`` did: the version used, the experiment and the run."""

    version: PipelineVersion
    experiment_id: str
    run: RunInfo


@dataclass(frozen=True)
class RecurringRunInfo:
    """A recurring run (KFP's schedule) of the pipeline.

    Attributes:
        recurring_run_id: KFP's recurring run id.
        name: Its display name.
        cron: The 6-field cron expression KFP runs it on.
        status: ENABLED or DISABLED.
        version: The pipeline version it runs.
        experiment_id: The experiment its runs go to.
        url: Its page in the UI, when the host is known.
        reused: True when an identical recurring run already existed and nothing was created.
    """

    recurring_run_id: str
    name: str
    cron: str
    status: str
    version: PipelineVersion
    experiment_id: str
    url: str | None
    reused: bool


@dataclass(frozen=True)
class PipelinePackage:
    """A compiled pipeline (KFP IR YAML) as the exact bytes to upload.

    Attributes:
        data: The YAML bytes, uploaded unchanged.
        parameters: The pipeline's parameters (``root.inputDefinitions.parameters``).
    """

    data: bytes
    parameters: Mapping[str, Mapping[str, Any]]

    @classmethod
    def load(cls, source: str | Path) -> PipelinePackage:
        """Read a compiled pipeline.

        Args:
            source: The YAML text, or a :class:`~pathlib.Path` to the file.

        Raises:
            KubeflowError: The file cannot be read or is not a compiled KFP pipeline.
        """
        if isinstance(source, Path):
            try:
                data = source.read_bytes()
            except OSError as error:
                raise KubeflowError(
                    f"cannot read the pipeline {source}: {error.strerror}"
                ) from error
            origin = f"{source}"
        else:
            data, origin = source.encode(), "the pipeline text"
        try:
            spec = next(iter(yaml.safe_load_all(data)), None)
        except yaml.YAMLError as error:
            raise KubeflowError(
                f"{origin} is not valid YAML ({error.__class__.__name__})"
            ) from error
        if not isinstance(spec, dict) or not {"pipelineInfo", "root"} <= spec.keys():
            hint = (
                " (pass a pathlib.Path to read a file)"
                if isinstance(source, str) and "\n" not in source.strip()
                else ""
            )
            raise KubeflowError(
                f"{origin} is not a compiled KFP pipeline (no pipelineInfo and root){hint}; "
                "compile one with `kfbatch compile`"
            )
        root = spec["root"] if isinstance(spec["root"], dict) else {}
        parameters = (root.get("inputDefinitions") or {}).get("parameters") or {}
        return cls(data, parameters)

    @property
    def digest(self) -> str:
        """SHA-256 of the YAML bytes (hex)."""
        return hashlib.sha256(self.data).hexdigest()

    def version_name(self, pipeline_name: str) -> str:
        """The deterministic version name: ``<pipeline_name>-<sha256[:12]>``."""
        return f"{pipeline_name}-{self.digest[:12]}"

    def check_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check run parameters against the pipeline's and convert text to the declared types.

        Args:
            params: Parameter values; strings (as typed on a command line) are converted to
                the declared type (integers, doubles, booleans, JSON lists and structs).

        Returns:
            The parameters to send.

        Raises:
            ConfigError: An unknown parameter, a missing required one, or a value that does not
                convert.
        """
        given = dict(params or {})
        for name in sorted(given):
            if name not in self.parameters:
                known = ", ".join(sorted(self.parameters)) or "none"
                raise ConfigError(
                    f"params.{name}", f"a parameter the pipeline declares ({known})", given[name]
                )
        for name, declared in sorted(self.parameters.items()):
            if (
                name not in given
                and "defaultValue" not in declared
                and not declared.get("isOptional")
            ):
                raise ConfigError(
                    f"params.{name}", "a value (the pipeline declares it without a default)"
                )
        return {
            name: _convert(name, value, str(self.parameters[name].get("parameterType", "")))
            for name, value in given.items()
        }


@dataclass(frozen=True)
class _Auth:
    """How requests authenticate; the token itself is never shown."""

    env_name: str
    token: str | None = field(default=None, repr=False)
    token_path: str | None = None

    def fix_unauthenticated(self) -> str:
        if self.token_path == POD_TOKEN_PATH:
            return (
                f"the pod's service-account token ({self.token_path}) was not accepted; mount "
                "KFP's token (a projected service-account token with audience "
                f"pipelines.kubeflow.org) at {KF_PIPELINES_SA_TOKEN_PATH}"
            )
        if self.token_path:
            return (
                f"the pod's token from {self.token_path} was not accepted; check that it is "
                "projected with audience pipelines.kubeflow.org"
            )
        if self.token:
            return (
                f"the bearer token in ${self.env_name} was not accepted (expired, or for another "
                f"cluster?); set {self.env_name} to a fresh token"
            )
        return (
            f"no token was sent; set the environment variable {self.env_name} to a bearer token "
            "(kubeflow.token_env names the variable)"
        )

    def identity(self) -> str:
        if self.token_path:
            return f"the pod's service account (token {self.token_path})"
        if self.token:
            return f"the identity of the token in ${self.env_name}"
        return f"an anonymous request (no token in ${self.env_name})"


class _BoundedRest(kfp_server_api.rest.RESTClientObject):
    """kfp-server-api's transport with a timeout on every request, no retries, no redirects."""

    def __init__(self, configuration: kfp_server_api.Configuration, timeout_s: float) -> None:
        configuration.retries = False
        super().__init__(configuration)
        self._timeout = (min(_CONNECT_TIMEOUT_S, timeout_s), timeout_s)

    def request(
        self,
        method: str,
        url: str,
        query_params: Any = None,
        headers: Any = None,
        body: Any = None,
        post_params: Any = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        return super().request(
            method,
            url,
            query_params=query_params,
            headers=headers,
            body=body,
            post_params=post_params,
            _preload_content=_preload_content,
            _request_timeout=_request_timeout or self._timeout,
        )


class _NotTheApi(Exception):
    """The health check was answered, but not with the KFP API's JSON."""


class _BoundedClient(Client):
    """kfp.Client with bounded requests and one checked health check.

    kfp's own health check (called by its constructor) retries 5 times, 5 s apart, and takes
    any answer, a login page included.
    """

    def __init__(self, *, request_timeout_s: float, **kwargs: Any) -> None:
        self._request_timeout_s = request_timeout_s
        self._healthz: Any = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
            super().__init__(**kwargs)
        self._bound()

    def _bound(self) -> None:
        api_client = self._healthz_api.api_client
        if not isinstance(api_client.rest_client, _BoundedRest):
            api_client.rest_client = _BoundedRest(api_client.configuration, self._request_timeout_s)

    def set_user_namespace(self, namespace: str) -> None:
        """Use ``namespace`` in this client only (kfp also writes it to ~/.config/kfp)."""
        self._context_setting["namespace"] = namespace

    def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
        """The health check's answer, requested once.

        Raises:
            _NotTheApi: The answer is not JSON.
        """
        if self._healthz is None:
            self._bound()
            response = self._healthz_api.healthz_service_get_healthz(_preload_content=False)
            content_type = response.headers.get("Content-Type", "")
            try:
                body = json.loads(response.data)
            except ValueError:
                body = None
            if "json" not in content_type or not isinstance(body, dict):
                raise _NotTheApi(content_type or "no content type")
            self._healthz = kfp_server_api.V2beta1GetHealthzResponse(
                multi_user=body.get("multi_user"), pipeline_store=body.get("pipeline_store")
            )
        return self._healthz


class KfpClient:
    """A connection to one KFP API, for one pipeline and its experiment.

    Args:
        kubeflow: The ``kubeflow`` group of the composed config.
        pipeline_name: The pipeline's name (``config.name``).
        request_timeout_s: Timeout of each request, in seconds.

    Raises:
        ConfigError: No host is configured, or the credentials settings are unusable.
        KubeflowError: The endpoint is unreachable, refuses the health check, or is not the
            KFP API.
    """

    def __init__(
        self, kubeflow: KubeflowConfig, *, pipeline_name: str, request_timeout_s: float = 30.0
    ) -> None:
        self.kubeflow = kubeflow
        self.pipeline_name = pipeline_name
        self.namespace = kubeflow.namespace
        self.experiment = kubeflow.experiment
        self.host, self._ui = _resolve_host(kubeflow)
        self._auth = _resolve_auth(kubeflow)
        credentials = (
            ServiceAccountTokenVolumeCredentials(self._auth.token_path)
            if self._auth.token_path
            else None
        )
        self._kfp = self._call(
            "answer its health check",
            _BoundedClient,
            request_timeout_s=request_timeout_s,
            host=self.host,
            namespace=self.namespace,
            existing_token=self._auth.token,
            credentials=credentials,
        )
        self._call("answer its health check", self._kfp.get_kfp_healthz)

    @classmethod
    def from_config(cls, config: Config, *, request_timeout_s: float = 30.0) -> KfpClient:
        """Connect with ``config.kubeflow`` for the pipeline ``config.name``."""
        return cls(config.kubeflow, pipeline_name=config.name, request_timeout_s=request_timeout_s)

    def upload(self, package: PipelinePackage) -> PipelineVersion:
        """Upload the pipeline, or a new version of it, unless an identical version exists.

        Returns:
            The version to run; ``reused`` tells whether it existed already.
        """
        name = self.pipeline_name
        version_name = package.version_name(name)
        description = f"kfbatch {version_name}, sha256 {package.digest}"
        pipeline_id = self._find_pipeline_id()
        if pipeline_id is not None:
            existing = self._find_version(pipeline_id, package)
            if existing is not None:
                logger.info("pipeline %s: reusing version %s", name, existing.name)
                return existing
        with tempfile.TemporaryDirectory(prefix="kfbatch-") as folder:
            path = os.path.join(folder, f"{name}.yaml")
            Path(path).write_bytes(package.data)
            if pipeline_id is None:
                pipeline = self._call(
                    f"upload pipeline '{name}'",
                    self._kfp.upload_pipeline,
                    path,
                    pipeline_name=name,
                    description=description,
                    namespace=self.namespace,
                )
                first = self._find_version(pipeline.pipeline_id, package)
                if first is None:
                    raise KubeflowError(
                        f"the KFP API at {self.host} created pipeline '{name}' but lists no "
                        "version of it; check the pipeline in the Kubeflow UI"
                    )
                logger.info("pipeline %s: uploaded (version %s)", name, first.name)
                return dataclasses.replace(first, reused=False)
            created = self._call(
                f"upload pipeline version '{version_name}'",
                self._kfp.upload_pipeline_version,
                path,
                pipeline_version_name=version_name,
                pipeline_id=pipeline_id,
                description=description,
            )
        logger.info("pipeline %s: uploaded version %s", name, version_name)
        return self._version(pipeline_id, created.pipeline_version_id, version_name, reused=False)

    def find_experiment(self) -> str | None:
        """The id of the experiment (``kubeflow.experiment``), or None if it does not exist."""
        found = self._call(
            f"look up experiment '{self.experiment}'",
            self._kfp.list_experiments,
            filter=_name_filter(self.experiment),
            namespace=self.namespace,
            page_size=2,
        )
        return found.experiments[0].experiment_id if found.experiments else None

    def ensure_experiment(self) -> str:
        """The id of the experiment (``kubeflow.experiment``), created when missing."""
        existing = self.find_experiment()
        if existing is not None:
            return existing
        created = self._call(
            f"create experiment '{self.experiment}'",
            self._kfp.create_experiment,
            self.experiment,
            namespace=self.namespace,
        )
        logger.info("created experiment %s (%s)", self.experiment, created.experiment_id)
        return created.experiment_id

    def start_run(
        self,
        version: PipelineVersion,
        experiment_id: str,
        *,
        params: Mapping[str, Any],
        run_name: str | None = None,
    ) -> RunInfo:
        """Start a run of a pipeline version in an experiment.

        Args:
            version: The version to run (from :meth:`upload`).
            experiment_id: The experiment (from :meth:`ensure_experiment`).
            params: Checked pipeline parameters (:meth:`PipelinePackage.check_params`).
            run_name: The run's display name; default ``<name>-<UTC time>``.
        """
        name = run_name or f"{self.pipeline_name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        run = self._call(
            f"start a run of '{self.pipeline_name}'",
            self._kfp.run_pipeline,
            experiment_id=experiment_id,
            job_name=name,
            params=dict(params),
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            pipeline_root=self.kubeflow.pipeline_root,
            service_account=self.kubeflow.service_account,
        )
        info = self._run_info(run)
        logger.info("started run %s (%s)", info.name, info.run_id)
        return info

    def get_run(self, run_id: str) -> RunInfo:
        """One run by id.

        Raises:
            KubeflowNotFound: No such run.
        """
        run = self._call(
            f"get run '{run_id}'", self._kfp.get_run, run_id, not_found=f"no run '{run_id}'"
        )
        return self._run_info(run)

    def list_runs(self, *, limit: int = 20) -> list[RunInfo]:
        """The newest runs of the experiment, newest first (none if it does not exist yet)."""
        experiment_id = self.find_experiment()
        if experiment_id is None:
            return []
        page = self._call(
            f"list the runs of experiment '{self.experiment}'",
            self._kfp.list_runs,
            experiment_id=experiment_id,
            sort_by="created_at desc",
            page_size=limit,
        )
        return [self._run_info(run) for run in page.runs or []]

    def wait(
        self,
        run_id: str,
        *,
        timeout_s: float,
        poll_s: float = 5.0,
        on_status: Callable[[RunInfo], None] | None = None,
    ) -> RunInfo:
        """Poll a run until it reaches a terminal state, reporting each change of state.

        Up to 3 consecutive transient failures (unreachable, 502/503/504) are tolerated.

        Args:
            run_id: The run to follow.
            timeout_s: How long to wait, in seconds.
            poll_s: Seconds between polls.
            on_status: Called with the run whenever its state changes (and first of all).

        Returns:
            The run in its terminal state.

        Raises:
            KubeflowTimeout: The run is still going after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        last_state, failures = None, 0
        while True:
            try:
                run = self.get_run(run_id)
                failures = 0
            except KubeflowError as error:
                transient = isinstance(error, KubeflowUnreachable) or (
                    error.status in _TRANSIENT_STATUS
                )
                failures += 1
                if not transient or failures > _TRANSIENT_TRIES or time.monotonic() > deadline:
                    raise
                logger.warning("%s (retrying, %d of %d)", error, failures, _TRANSIENT_TRIES)
                time.sleep(poll_s)
                continue
            if run.state != last_state:
                logger.info("run %s: %s", run.run_id, run.state)
                if on_status is not None:
                    on_status(run)
                last_state = run.state
            if run.done:
                return run
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                where = run.url or f"`kfbatch runs get {run.run_id}`"
                raise KubeflowTimeout(
                    f"run {run.run_id} is still {run.state} after {timeout_s:g} s; "
                    f"follow it at {where}",
                    run=run,
                )
            time.sleep(min(poll_s, remaining))

    def schedule(
        self,
        package: PipelinePackage,
        *,
        cron: str,
        params: Mapping[str, Any],
        name: str | None = None,
        replace: bool = False,
    ) -> RecurringRunInfo:
        """Create a recurring run of the pipeline, or reuse an identical one.

        Runs are started one at a time (``max_concurrency=1``) and missed runs are not caught
        up (``no_catchup``).

        Args:
            package: The compiled pipeline (uploaded as in :meth:`upload`).
            cron: KFP's 6-field cron (from :func:`~pipelines.config.cron.recurring_cron`).
            params: Checked pipeline parameters.
            name: The recurring run's display name; default the pipeline name.
            replace: Replace recurring runs of the same name whose version, cron or parameters
                differ (the new one is created first, then the old ones are deleted).

        Raises:
            KubeflowError: A different recurring run of the same name exists and ``replace``
                is false.
        """
        name = name or self.pipeline_name
        version = self.upload(package)
        experiment_id = self.ensure_experiment()
        found = self._call(
            f"list the recurring runs of experiment '{self.experiment}'",
            self._kfp.list_recurring_runs,
            experiment_id=experiment_id,
            filter=_name_filter(name),
            page_size=100,
        )
        existing = [r for r in found.recurring_runs or [] if r.display_name == name]
        for recurring in existing:
            if _same_schedule(recurring, version.version_id, cron, params):
                logger.info("recurring run %s: unchanged", name)
                return self._recurring_info(recurring, version, experiment_id, reused=True)
        if existing and not replace:
            other = existing[0]
            raise KubeflowError(
                f"experiment '{self.experiment}' at {self.host} already has a recurring run "
                f"named '{name}' ({other.recurring_run_id}, cron '{_cron_of(other)}') with "
                "another pipeline version, cron or parameters; replace it "
                "(`kfbatch schedule --replace`) or delete it in the Kubeflow UI"
            )
        created = self._call(
            f"create recurring run '{name}'",
            self._kfp.create_recurring_run,
            experiment_id=experiment_id,
            job_name=name,
            description=f"kfbatch {version.name}",
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            params=dict(params),
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            pipeline_root=self.kubeflow.pipeline_root,
            service_account=self.kubeflow.service_account,
        )
        for old in existing:
            self._call(
                f"delete recurring run '{old.recurring_run_id}'",
                self._kfp.delete_recurring_run,
                old.recurring_run_id,
            )
            logger.info("recurring run %s: replaced %s", name, old.recurring_run_id)
        logger.info("recurring run %s: created on cron '%s'", name, cron)
        return self._recurring_info(created, version, experiment_id, reused=False)

    def _find_pipeline_id(self) -> str | None:
        found = self._call(
            f"look up pipeline '{self.pipeline_name}'",
            self._kfp.list_pipelines,
            filter=_name_filter(self.pipeline_name),
            namespace=self.namespace,
            page_size=2,
        )
        pipelines = found.pipelines or []
        if len(pipelines) > 1:
            raise KubeflowError(
                f"several pipelines are named '{self.pipeline_name}' at {self.host} (namespace "
                f"'{self.namespace}'); delete the extra ones in the Kubeflow UI"
            )
        return pipelines[0].pipeline_id if pipelines else None

    def _find_version(self, pipeline_id: str, package: PipelinePackage) -> PipelineVersion | None:
        """The version of ``pipeline_id`` uploaded from the same bytes, if any."""
        version_name = package.version_name(self.pipeline_name)
        token, seen = "", set()
        while True:
            page = self._call(
                f"list the versions of pipeline '{self.pipeline_name}'",
                self._kfp.list_pipeline_versions,
                pipeline_id,
                page_token=token,
                page_size=100,
                sort_by="created_at desc",
            )
            for version in page.pipeline_versions or []:
                if version.display_name == version_name or package.digest in (
                    version.description or ""
                ):
                    return self._version(
                        pipeline_id,
                        version.pipeline_version_id,
                        version.display_name,
                        reused=True,
                    )
            seen.add(token)
            token = page.next_page_token or ""
            if not token or token in seen:
                return None

    def _version(
        self, pipeline_id: str, version_id: str, name: str, *, reused: bool
    ) -> PipelineVersion:
        url = f"{self._ui}/#/pipelines/details/{pipeline_id}/version/{version_id}"
        return PipelineVersion(pipeline_id, version_id, name, reused, url if self._ui else None)

    def _run_info(self, run: Any) -> RunInfo:
        error = run.error.message if run.error is not None and run.error.message else None
        return RunInfo(
            run_id=run.run_id,
            name=run.display_name or "",
            state=str(run.state or "RUNTIME_STATE_UNSPECIFIED"),
            created_at=_time(run.created_at),
            finished_at=_time(run.finished_at),
            url=f"{self._ui}/#/runs/details/{run.run_id}" if self._ui else None,
            error=error,
        )

    def _recurring_info(
        self, recurring: Any, version: PipelineVersion, experiment_id: str, *, reused: bool
    ) -> RecurringRunInfo:
        rid = recurring.recurring_run_id
        return RecurringRunInfo(
            recurring_run_id=rid,
            name=recurring.display_name or "",
            cron=_cron_of(recurring),
            status=str(recurring.status or "STATUS_UNSPECIFIED"),
            version=version,
            experiment_id=experiment_id,
            url=f"{self._ui}/#/recurringrun/details/{rid}" if self._ui else None,
            reused=reused,
        )

    def _call(
        self,
        action: str,
        function: Callable[..., T],
        /,
        *args: Any,
        not_found: str | None = None,
        **kwargs: Any,
    ) -> T:
        """Call kfp, turning its failures into one-line errors and discarding what it prints."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # kfp prints UI links
                return function(*args, **kwargs)
        except kfp_server_api.ApiException as error:
            raise self._api_error(error, action, not_found) from error
        except _NotTheApi as error:
            raise KubeflowError(
                f"{self.host} is not the KFP API: /apis/v2beta1/healthz answered with {error}; "
                f"set kubeflow.host to the KFP API URL, such as https://<kubeflow>/pipeline, "
                f"or {_PORT_FORWARD}"
            ) from error
        except urllib3.exceptions.HTTPError as error:
            raise KubeflowUnreachable(self._unreachable(_network_reason(error))) from error

    def _unreachable(self, reason: str) -> str:
        return (
            f"cannot reach the KFP API at {self.host} ({reason}): check kubeflow.host "
            f"(or {HOST_ENV}) and that the endpoint is up, {_PORT_FORWARD}"
        )

    def _api_error(
        self, error: kfp_server_api.ApiException, action: str, not_found: str | None
    ) -> KubeflowError:
        status = int(error.status or 0)
        where = f"the KFP API at {self.host}"
        detail = _server_message(error)
        if status == 0:
            lines = str(error.reason or "transport error").strip().splitlines()
            return KubeflowUnreachable(self._unreachable(lines[-1][:200] if lines else ""))
        if 300 <= status < 400:
            location = (error.headers or {}).get("Location", "another page")
            return KubeflowAuthError(
                f"{where} redirected the request to {location} (HTTP {status}), which looks like "
                f"a login page: send a bearer token in ${self._auth.env_name} "
                "(kubeflow.token_env), or set kubeflow.host to the KFP API itself",
                status=status,
            )
        if status == 401:
            return KubeflowAuthError(
                f"{where} refused to {action}: not authenticated (401{detail}); "
                f"{self._auth.fix_unauthenticated()}",
                status=status,
            )
        if status == 403:
            return KubeflowAuthError(
                f"{where} refused to {action} in namespace '{self.namespace}' (403 "
                f"forbidden{detail}): {self._auth.identity()} has no access there; check "
                "kubeflow.namespace and that you are a contributor of that Kubeflow profile",
                status=status,
            )
        if status == 404:
            if not_found:
                return KubeflowNotFound(f"{not_found} at {self.host} (404{detail})", status=status)
            return KubeflowNotFound(
                f"{where} could not {action}: not found (404{detail}); check that kubeflow.host "
                "is the KFP API URL (the one that serves /apis/v2beta1/)",
                status=status,
            )
        if status >= 500:
            return KubeflowError(
                f"{where} failed to {action} ({status}{detail}); retry later, or check the logs "
                "of its ml-pipeline API server",
                status=status,
            )
        return KubeflowError(f"{where} refused to {action} ({status}{detail})", status=status)


def submit_run(
    config: Config,
    pipeline: str | Path,
    *,
    params: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    wait: bool = False,
    timeout_s: float = 86_400.0,
    poll_s: float = 5.0,
    on_status: Callable[[RunInfo], None] | None = None,
) -> Submission:
    """Upload the compiled pipeline (or reuse its version), then start a run (``kfbatch submit``).

    Args:
        config: The composed config (``name``, ``kubeflow``).
        pipeline: The compiled pipeline YAML text, or a :class:`~pathlib.Path` to it.
        params: Pipeline parameters; strings are converted to the declared types.
        run_name: The run's display name; default ``<name>-<UTC time>``.
        wait: Follow the run until it finishes.
        timeout_s: How long to wait, with ``wait``.
        poll_s: Seconds between polls, with ``wait``.
        on_status: Called with the run whenever its state changes, with ``wait``.

    Returns:
        The version used, the experiment id and the run (final, with ``wait``).

    Raises:
        ConfigError: Bad connection settings or parameters (before anything is sent).
        KubeflowError: KFP refused a request or could not be reached.
        KubeflowTimeout: With ``wait``, the run is still going after ``timeout_s``.
    """
    package = PipelinePackage.load(pipeline)
    checked = package.check_params(params)
    client = KfpClient.from_config(config)
    version = client.upload(package)
    experiment_id = client.ensure_experiment()
    run = client.start_run(version, experiment_id, params=checked, run_name=run_name)
    if wait:
        run = client.wait(run.run_id, timeout_s=timeout_s, poll_s=poll_s, on_status=on_status)
    return Submission(version, experiment_id, run)


def create_schedule(
    config: Config,
    pipeline: str | Path,
    *,
    params: Mapping[str, Any] | None = None,
    name: str | None = None,
    replace: bool = False,
) -> RecurringRunInfo:
    """Create a recurring run on ``schedule.cron`` (``kfbatch schedule``).

    The cron is converted to KFP's 6-field form; an identical recurring run is reused.

    Args:
        config: The composed config (``name``, ``kubeflow``, ``schedule``).
        pipeline: The compiled pipeline YAML text, or a :class:`~pathlib.Path` to it.
        params: Pipeline parameters; strings are converted to the declared types.
        name: The recurring run's display name; default ``config.name``.
        replace: Replace a recurring run of the same name that differs.

    Raises:
        ConfigError: No or an invalid ``schedule.cron``, a non-UTC ``schedule.timezone``, bad
            connection settings or parameters (before anything is sent).
        KubeflowError: KFP refused a request or could not be reached, or a different recurring
            run of the same name exists and ``replace`` is false.
    """
    cron = recurring_cron(config.schedule)
    package = PipelinePackage.load(pipeline)
    checked = package.check_params(params)
    client = KfpClient.from_config(config)
    return client.schedule(package, cron=cron, params=checked, name=name, replace=replace)


def list_runs(config: Config, *, limit: int = 20) -> list[RunInfo]:
    """The newest runs in the pipeline's experiment, newest first (``kfbatch runs list``)."""
    return KfpClient.from_config(config).list_runs(limit=limit)


def get_run(config: Config, run_id: str) -> RunInfo:
    """One run by id (``kfbatch runs get``)."""
    return KfpClient.from_config(config).get_run(run_id)


def wait_for_run(
    config: Config,
    run_id: str,
    *,
    timeout_s: float = 86_400.0,
    poll_s: float = 5.0,
    on_status: Callable[[RunInfo], None] | None = None,
) -> RunInfo:
    """Follow a run until it finishes (see :meth:`KfpClient.wait`)."""
    return KfpClient.from_config(config).wait(
        run_id, timeout_s=timeout_s, poll_s=poll_s, on_status=on_status
    )


def _resolve_host(kubeflow: KubeflowConfig) -> tuple[str, str | None]:
    """The API URL and the UI base URL (None for the in-cluster service)."""
    host, source = kubeflow.host, ""
    if not host:
        host, source = os.environ.get(HOST_ENV, "").strip(), f"environment variable {HOST_ENV}"
    if not host:
        if kubeflow.in_cluster:
            return IN_CLUSTER_HOST, None
        raise ConfigError(
            "kubeflow.host",
            f"the KFP API URL, e.g. https://kubeflow.example.com/pipeline (or set {HOST_ENV})",
            None,
        )
    if not re.match(r"^https?://[^/\s]+", host):
        raise ConfigError(
            "kubeflow.host", "an http:// or https:// URL of the KFP API", host, source=source
        )
    return host.rstrip("/"), host.rstrip("/")


def _resolve_auth(kubeflow: KubeflowConfig) -> _Auth:
    if not _ENV_NAME.match(kubeflow.token_env):
        # Never echo the value: a token pasted here by mistake must not reach the terminal.
        raise ConfigError(
            "kubeflow.token_env",
            "the NAME of an environment variable that holds the token (not the token itself)",
        )
    if kubeflow.in_cluster:
        kfp_path = os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH
        for path in (kfp_path, POD_TOKEN_PATH):
            if os.path.isfile(path):
                return _Auth(kubeflow.token_env, token_path=path)
        raise ConfigError(
            "kubeflow.in_cluster",
            f"to run in a pod with a service-account token (none at {kfp_path} or "
            f"{POD_TOKEN_PATH}); set kubeflow.in_cluster=false outside a cluster",
            True,
        )
    token = os.environ.get(kubeflow.token_env, "").strip()
    return _Auth(kubeflow.token_env, token=token or None)


def _name_filter(name: str) -> str:
    """A KFP list filter selecting objects whose display name is ``name``."""
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    )


def _convert(name: str, value: Any, kind: str) -> Any:
    """A parameter value in the type the pipeline declares (text is parsed)."""
    if not isinstance(value, str):
        return str(value) if kind == "STRING" and isinstance(value, int | float) else value
    try:
        if kind == "NUMBER_INTEGER":
            return int(value)
        if kind == "NUMBER_DOUBLE":
            return float(value)
        if kind == "BOOLEAN":
            return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[
                value.strip().lower()
            ]
        if kind in ("LIST", "STRUCT"):
            parsed = json.loads(value)
            if isinstance(parsed, list if kind == "LIST" else dict):
                return parsed
            raise ValueError(kind)
    except (ValueError, KeyError):
        expected = {
            "NUMBER_INTEGER": "an integer",
            "NUMBER_DOUBLE": "a number",
            "BOOLEAN": "true or false",
            "LIST": "a JSON list",
            "STRUCT": "a JSON object",
        }[kind]
        raise ConfigError(f"params.{name}", f"{expected} (parameter type {kind})", value) from None
    return value


def _same_schedule(recurring: Any, version_id: str, cron: str, params: Mapping[str, Any]) -> bool:
    reference = recurring.pipeline_version_reference
    runs_version = (reference.pipeline_version_id if reference else None) or (
        recurring.pipeline_version_id
    )
    runtime = recurring.runtime_config
    return (
        runs_version == version_id
        and _cron_of(recurring) == cron
        and dict((runtime.parameters if runtime else None) or {}) == dict(params)
        and str(recurring.status or "ENABLED") != "DISABLED"
    )


def _cron_of(recurring: Any) -> str:
    trigger = recurring.trigger
    schedule = trigger.cron_schedule if trigger is not None else None
    return (schedule.cron if schedule is not None else None) or ""


def _time(value: datetime | None) -> datetime | None:
    """KFP's timestamp, or None for its 'unset' value (the epoch)."""
    if value is None or value.timestamp() <= 0:
        return None
    return value


def _server_message(error: kfp_server_api.ApiException) -> str:
    """': <message>' from an API error body (JSON or text), or '' when there is none."""
    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = ""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("message", "error_message", "error"):
            if isinstance(parsed.get(key), str) and parsed[key].strip():
                text = parsed[key]
                break
    elif body and "<html" not in body.lower():
        text = body
    text = " ".join(text.split())
    return f": {text[:300]}" if text else ""


def _network_reason(error: BaseException) -> str:
    """A few words for a transport failure (no urllib3 object dumps)."""
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        error = error.reason
    exceptions = urllib3.exceptions
    if isinstance(error, exceptions.NameResolutionError):
        return "host name not found"
    if isinstance(error, exceptions.NewConnectionError):
        return "connection refused" if "refused" in str(error).lower() else "connection failed"
    if isinstance(error, exceptions.ConnectTimeoutError | exceptions.ReadTimeoutError):
        return "no answer in time"
    if isinstance(error, exceptions.SSLError):
        return "TLS handshake failed"
    if isinstance(error, exceptions.ProtocolError):
        return "connection closed by the server"
    return error.__class__.__name__
