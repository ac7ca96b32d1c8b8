"""Recurring runs (KFP's schedules) of the pipeline: ``kfbatch schedule``.

:func:`create_schedule` converts ``schedule.cron`` to KFP's 6-field form and creates a
recurring run of the uploaded pipeline version, or reuses an identical one
(:func:`schedule_pipeline`); it reports a :class:`RecurringRunInfo`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config.cron import recurring_cron
from pipelines.config.schema import Config
from pipelines.kubeflow.client import KfpClient, name_filter
from pipelines.kubeflow.connection import KubeflowError
from pipelines.kubeflow.package import PipelinePackage
from pipelines.kubeflow.runs import PipelineVersion

__all__ = ["RecurringRunInfo", "create_schedule", "schedule_pipeline"]

logger = logging.getLogger(__name__)


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

    @classmethod
    def of(
        cls,
        recurring: Any,
        version: PipelineVersion,
        experiment_id: str,
        *,
        reused: bool,
        ui: str | None,
    ) -> RecurringRunInfo:
        """From kfp-server-api's recurring run; ``ui`` is the Kubeflow UI's address, if known."""
        rid = recurring.recurring_run_id
        return cls(
            recurring_run_id=rid,
            name=recurring.display_name or "",
            cron=_cron_of(recurring),
            status=str(recurring.status or "STATUS_UNSPECIFIED"),
            version=version,
            experiment_id=experiment_id,
            url=f"{ui}/#/recurringrun/details/{rid}" if ui else None,
            reused=reused,
        )


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
    return schedule_pipeline(client, package, cron=cron, params=checked, name=name, replace=replace)


def schedule_pipeline(
    client: KfpClient,
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
        package: The compiled pipeline (uploaded as in :meth:`KfpClient.upload`).
        cron: KFP's 6-field cron (from :func:`~pipelines.config.cron.recurring_cron`).
        params: Checked pipeline parameters.
        name: The recurring run's display name; default the pipeline name.
        replace: Replace recurring runs of the same name whose version, cron or parameters
            differ (the new one is created first, then the old ones are deleted).

    Raises:
        KubeflowError: A different recurring run of the same name exists and ``replace``
            is false.
    """
    name = name or client.pipeline_name
    version = client.upload(package)
    experiment_id = client.ensure_experiment()
    found = client.call(
        f"list the recurring runs of experiment '{client.experiment}'",
        client.kfp.list_recurring_runs,
        experiment_id=experiment_id,
        filter=name_filter(name),
        page_size=100,
    )
    existing = [r for r in found.recurring_runs or [] if r.display_name == name]
    for recurring in existing:
        if _same_schedule(recurring, version.version_id, cron, params):
            logger.info("recurring run %s: unchanged", name)
            return RecurringRunInfo.of(recurring, version, experiment_id, reused=True, ui=client.ui)
    if existing and not replace:
        other = existing[0]
        raise KubeflowError(
            f"experiment '{client.experiment}' at {client.host} already has a recurring run "
            f"named '{name}' ({other.recurring_run_id}, cron '{_cron_of(other)}') with "
            "another pipeline version, cron or parameters; replace it "
            "(`kfbatch schedule --replace`) or delete it in the Kubeflow UI"
        )
    created = client.call(
        f"create recurring run '{name}'",
        client.kfp.create_recurring_run,
        experiment_id=experiment_id,
        job_name=name,
        description=f"kfbatch {version.name}",
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=dict(params),
        pipeline_id=version.pipeline_id,
        version_id=version.version_id,
        pipeline_root=client.kubeflow.pipeline_root,
        service_account=client.kubeflow.service_account,
    )
    for old in existing:
        client.call(
            f"delete recurring run '{old.recurring_run_id}'",
            client.kfp.delete_recurring_run,
            old.recurring_run_id,
        )
        logger.info("recurring run %s: replaced %s", name, old.recurring_run_id)
    logger.info("recurring run %s: created on cron '%s'", name, cron)
    return RecurringRunInfo.of(created, version, experiment_id, reused=False, ui=client.ui)


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
