"""Submit, schedule and inspect the pipeline on Kubeflow Pipelines (KFP v2 API) with kfp.Client.

Entry points for the CLI: :func:`submit_run` (``kfbatch submit``), :func:`list_runs`,
:func:`get_run` and :func:`wait_for_run` (``kfbatch runs``); ``kfbatch schedule`` is
:func:`pipelines.kubeflow.schedule.create_schedule`. :class:`KfpClient` holds one connection
for callers that do several things. They return the small dataclasses of
:mod:`pipelines.kubeflow.runs` (:class:`~pipelines.kubeflow.runs.RunInfo`,
:class:`~pipelines.kubeflow.runs.PipelineVersion`,
:class:`~pipelines.kubeflow.runs.Submission`), never kfp-server-api models.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.config.schema import Config, KubeflowConfig
from pipelines.kubeflow.connection import (
    Connection,
    KubeflowError,
    KubeflowUnreachable,
)
from pipelines.kubeflow.package import PipelinePackage
from pipelines.kubeflow.runs import KubeflowTimeout, PipelineVersion, RunInfo, Submission

__all__ = [
    "KfpClient",
    "get_run",
    "list_runs",
    "name_filter",
    "submit_run",
    "wait_for_run",
]

logger = logging.getLogger(__name__)

_TRANSIENT_STATUS = frozenset({502, 503, 504})
_TRANSIENT_TRIES = 3


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
        self.host, self.ui = connection.host, connection.ui
        #: Runs one request to the KFP API, bounded, with one-line errors (Connection.call).
        self.call = connection.call
        #: The ``kfp.Client`` behind it.
        self.kfp = connection.kfp

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
                pipeline = self.call(
                    f"upload pipeline '{name}'",
                    self.kfp.upload_pipeline,
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
            created = self.call(
                f"upload pipeline version '{version_name}'",
                self.kfp.upload_pipeline_version,
                path,
                pipeline_version_name=version_name,
                pipeline_id=pipeline_id,
                description=description,
            )
        logger.info("pipeline %s: uploaded version %s", name, version_name)
        return PipelineVersion.of(
            pipeline_id, created.pipeline_version_id, version_name, reused=False, ui=self.ui
        )

    def find_experiment(self) -> str | None:
        """The id of the experiment (``kubeflow.experiment``), or None if it does not exist."""
        found = self.call(
            f"look up experiment '{self.experiment}'",
            self.kfp.list_experiments,
            filter=name_filter(self.experiment),
            namespace=self.namespace,
            page_size=2,
        )
        return found.experiments[0].experiment_id if found.experiments else None

    def ensure_experiment(self) -> str:
        """The id of the experiment (``kubeflow.experiment``), created when missing."""
        existing = self.find_experiment()
        if existing is not None:
            return existing
        created = self.call(
            f"create experiment '{self.experiment}'",
            self.kfp.create_experiment,
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
        run = self.call(
            f"start a run of '{self.pipeline_name}'",
            self.kfp.run_pipeline,
            experiment_id=experiment_id,
            job_name=name,
            params=dict(params),
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
            pipeline_root=self.kubeflow.pipeline_root,
            service_account=self.kubeflow.service_account,
        )
        info = RunInfo.of(run, self.ui)
        logger.info("started run %s (%s)", info.name, info.run_id)
        return info

    def get_run(self, run_id: str) -> RunInfo:
        """One run by id.

        Raises:
            KubeflowNotFound: No such run.
        """
        run = self.call(
            f"get run '{run_id}'", self.kfp.get_run, run_id, not_found=f"no run '{run_id}'"
        )
        return RunInfo.of(run, self.ui)

    def list_runs(self, *, limit: int = 20) -> list[RunInfo]:
        """The newest runs of the experiment, newest first (none if it does not exist yet)."""
        experiment_id = self.find_experiment()
        if experiment_id is None:
            return []
        page = self.call(
            f"list the runs of experiment '{self.experiment}'",
            self.kfp.list_runs,
            experiment_id=experiment_id,
            sort_by="created_at desc",
            page_size=limit,
        )
        return [RunInfo.of(run, self.ui) for run in page.runs or []]

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

    def _find_pipeline_id(self) -> str | None:
        found = self.call(
            f"look up pipeline '{self.pipeline_name}'",
            self.kfp.list_pipelines,
            filter=name_filter(self.pipeline_name),
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
            page = self.call(
                f"list the versions of pipeline '{self.pipeline_name}'",
                self.kfp.list_pipeline_versions,
                pipeline_id,
                page_token=token,
                page_size=100,
                sort_by="created_at desc",
            )
            for version in page.pipeline_versions or []:
                if version.display_name == version_name or package.digest in (
                    version.description or ""
                ):
                    return PipelineVersion.of(
                        pipeline_id,
                        version.pipeline_version_id,
                        version.display_name,
                        reused=True,
                        ui=self.ui,
                    )
            seen.add(token)
            token = page.next_page_token or ""
            if not token or token in seen:
                return None


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


def name_filter(name: str) -> str:
    """A KFP list filter selecting objects whose display name is ``name``."""
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    )
