"""The DAG's model: steps, their inputs (other steps' outputs or outside data), resources and
fan-outs.

:func:`pipelines.builder.build_dag` decides the DAG from a validated config; backends
translate it and never re-decide it: the local runner executes :meth:`Dag.nodes` (fan-outs
expanded into one node per item), the KFP compiler maps a fan-out step to
``dsl.ParallelFor`` over ``FanOut.items`` and a collected input to ``dsl.Collected``. The same
config always gives the same DAG (:meth:`Dag.digest` is stable across processes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RUN_ID",
    "Dag",
    "FanOut",
    "Node",
    "Ref",
    "Resources",
    "Step",
    "Uri",
    "memory_bytes",
]

_MEMORY_UNITS = {
    "": 1,
    **{suffix: 10 ** (3 * (i + 1)) for i, suffix in enumerate("kMGTPE")},
    **{f"{suffix}i": 2 ** (10 * (i + 1)) for i, suffix in enumerate("KMGTPE")},
}

#: Placeholder for the run id inside params: backends substitute their run id at execution
#: time (the local run id, or KFP's job id), and it never enters a cache key.
RUN_ID = "{{kfbatch.run_id}}"
#: Placeholder for the run's logical date (``YYYY-MM-DD``): :attr:`Dag.run_date`, else the
#: day the run starts (UTC). Unlike the run id it enters the local cache key once
#: substituted, so a run for a new date publishes again.
RUN_DATE = "{{kfbatch.run_date}}"


@dataclass(frozen=True)
class Ref:
    """An output of another step; for a fan-out step, the list collected from every branch."""

    step: str
    output: str


@dataclass(frozen=True)
class Uri:
    """Data outside the pipeline: a local path or an object-store URI."""

    uri: str


@dataclass(frozen=True)
class Toleration:
    """A Kubernetes toleration."""

    key: str
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None


@dataclass(frozen=True)
class Resources:
    """What one step (one branch of a fan-out) requests."""

    cpu: float
    memory: str
    gpu: int = 0
    accelerator: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()

    @property
    def threads(self) -> int:
        """Compute threads a step should use: its CPU request rounded up."""
        return max(1, math.ceil(self.cpu))


@dataclass(frozen=True)
class FanOut:
    """Run the step once per item, ``parallelism`` at a time, with ``params[param] = item``."""

    param: str
    items: tuple[Any, ...]
    parallelism: int


@dataclass(frozen=True)
class Step:
    """One declared step; a fan-out step stands for one branch per item."""

    name: str
    component: str
    params: Mapping[str, Any]
    inputs: Mapping[str, Ref | Uri]
    outputs: tuple[str, ...]
    resources: Resources
    retries: int = 0
    cache: bool = True
    timeout_s: float = 0.0
    fan_out: FanOut | None = None
    description: str = ""


@dataclass(frozen=True)
class Node:
    """A unit the local runner executes: a step, or one branch of a fan-out step."""

    name: str
    step: Step
    params: Mapping[str, Any]
    index: int | None = None


@dataclass(frozen=True)
class Dag:
    """Steps in topological order (every input refers to an earlier step)."""

    name: str
    steps: tuple[Step, ...]
    #: The run's logical date (``config.run_date``); None means the day the run starts.
    run_date: str | None = None
    _by_name: Mapping[str, Step] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Step] = {}
        for step in self.steps:
            if step.name in by_name:
                raise ValueError(f"duplicate step name {step.name!r}")
            for ref in step.inputs.values():
                if isinstance(ref, Ref) and (
                    ref.step not in by_name or ref.output not in by_name[ref.step].outputs
                ):
                    raise ValueError(f"step {step.name!r} reads {ref} before it is produced")
            by_name[step.name] = step
        object.__setattr__(self, "_by_name", by_name)

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        return self._by_name[name]

    def upstream(self, step: Step) -> list[str]:
        """Names of the steps whose outputs ``step`` reads, in input order, without repeats."""
        names = [ref.step for ref in step.inputs.values() if isinstance(ref, Ref)]
        return list(dict.fromkeys(names))

    def nodes(self) -> Iterator[Node]:
        """Every executable node in topological order, fan-outs expanded per item."""
        for step in self.steps:
            if step.fan_out is None:
                yield Node(step.name, step, dict(step.params))
                continue
            for index, item in enumerate(step.fan_out.items):
                params = {**step.params, step.fan_out.param: item}
                yield Node(f"{step.name}-{index}", step, params, index)

    def node(self, name: str) -> Node:
        """The node called ``name``: a step, or a fan-out branch such as ``infer-2``."""
        for node in self.nodes():
            if node.name == name:
                return node
        raise KeyError(f"the DAG has no node {name!r}")

    def node_names(self, step_name: str) -> list[str]:
        """The node names a step expands to (one, or one per fan-out item)."""
        step = self.step(step_name)
        if step.fan_out is None:
            return [step.name]
        return [f"{step.name}-{i}" for i in range(len(step.fan_out.items))]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the DAG, stable for the same config."""
        return {
            "name": self.name,
            "run_date": self.run_date,
            "steps": [_plain(step) for step in self.steps],
        }

    def digest(self) -> str:
        """sha256 of the canonical JSON form: equal digests mean identical DAGs."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, (Ref, Uri)):
        return {type(value).__name__.lower(): dataclasses.asdict(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def memory_bytes(quantity: str) -> float:
    """Bytes in a Kubernetes memory quantity such as ``512Mi``, ``4Gi``, ``2G`` or ``1.5Gi``."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", quantity)
    if match is None or match.group(2) not in _MEMORY_UNITS:
        raise ValueError(f"{quantity!r} is not a Kubernetes memory quantity such as 512Mi")
    return float(match.group(1)) * _MEMORY_UNITS[match.group(2)]
