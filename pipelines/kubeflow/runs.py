"""What kfbatch reports about KFP runs and pipeline versions: small frozen dataclasses made
from kfp-server-api's models, never the models themselves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipelines.kubeflow.connection import KubeflowError

__all__ = ["TERMINAL_STATES", "KubeflowTimeout", "PipelineVersion", "RunInfo", "Submission"]

#: Run states after which a run never changes again.
TERMINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})


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

    @classmethod
    def of(cls, run: Any, ui: str | None) -> RunInfo:
        """From kfp-server-api's run; ``ui`` is the Kubeflow UI's address, if known."""
        error = run.error.message if run.error is not None and run.error.message else None
        return cls(
            run_id=run.run_id,
            name=run.display_name or "",
            state=str(run.state or "RUNTIME_STATE_UNSPECIFIED"),
            created_at=_time(run.created_at),
            finished_at=_time(run.finished_at),
            url=f"{ui}/#/runs/details/{run.run_id}" if ui else None,
            error=error,
        )

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

    @classmethod
    def of(
        cls, pipeline_id: str, version_id: str, name: str, *, reused: bool, ui: str | None
    ) -> PipelineVersion:
        """The version's info; ``ui`` is the Kubeflow UI's address, if known."""
        url = f"{ui}/#/pipelines/details/{pipeline_id}/version/{version_id}" if ui else None
        return cls(pipeline_id, version_id, name, reused, url)


@dataclass(frozen=True)
class Submission:
    """What ``kfbatch submit`` did: the version used, the experiment and the run."""

    version: PipelineVersion
    experiment_id: str
    run: RunInfo


def _time(value: datetime | None) -> datetime | None:
    """KFP's timestamp, or None for its 'unset' value (the epoch)."""
    if value is None or value.timestamp() <= 0:
        return None
    return value
