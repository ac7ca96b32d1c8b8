"""Submit, schedule and inspect the pipeline on Kubeflow Pipelines (KFP v2 API) with kfp.Client.

Entry points for the CLI: :func:`submit_run` (``kfbatch submit``), :func:`create_schedule`
(``kfbatch schedule``), :func:`list_runs`, :func:`get_run` and :func:`wait_for_run`
(``kfbatch runs``). :class:`KfpClient` holds one connection for callers that do several things.
They return small dataclasses (:class:`RunInfo`, :class:`PipelineVersion`,
:class:`Submission`, :class:`RecurringRunInfo`), never kfp-server-api models.

The connection (host, credentials, bounded requests, one-line errors) is
:mod:`pipelines.kubeflow.connection`; the compiled pipeline and its parameters are
:mod:`pipelines.kubeflow.package`.

Pipelines are uploaded once per content. A version is named ``<name>-<sha256[:12]>`` after the
YAML bytes and its description records the full digest, so submitting the same YAML again
reuses its version (the first upload creates the pipeline, whose first version KFP names after
the pipeline; the digest in its description identifies it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.config.cron import recurring_cron
from pipelines.config.schema import Config, KubeflowConfig
from pipelines.kubeflow.connection import (
    Connection,
    KubeflowError,
    KubeflowUnreachable,
)
from pipelines.kubeflow.package import PipelinePackage

__all__ = [
    "TERMINAL_STATES",
    "KfpClient",
    "KubeflowTimeout",
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

#: Run states after which a run never changes again.
TERMINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})

_TRANSIENT_STATUS = frozenset({502, 503, 504})
_TRANSIENT_TRIES = 3


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
        connection = Connection(kubeflow, request_timeout_s=request_timeout_s)
        self.host, self._ui = connection.host, connection.ui
        self._call, self._kfp = connection.call, connection.kfp

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


def _name_filter(name: str) -> str:
    """A KFP list filter selecting objects whose display name is ``name``."""
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    )


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
