"""Field helpers and patterns shared by the schema's groups: :func:`knob` keeps a default with
its validation rules (read by :mod:`pipelines.config.validate`)."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from omegaconf import MISSING

__all__ = [
    "DEFAULT_STAGES",
    "MEMORY_PATTERN",
    "NAME_PATTERN",
    "STAGES",
    "SUBDOMAIN_PATTERN",
    "knob",
]


#: Stages in pipeline order; ``stages`` in the config selects a subset.
STAGES = ("etl", "batch_map", "train", "evaluate", "infer")
#: The stages a config runs unless it says otherwise.
DEFAULT_STAGES = ("etl", "train", "evaluate", "infer")

#: Kubernetes resource quantity for memory (binary or decimal SI suffix), e.g. 512Mi, 4Gi, 2G.
MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
#: DNS-1123 label: the pipeline name becomes Kubernetes and KFP resource names.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
#: DNS-1123 subdomain: names of most Kubernetes objects (PVCs, ServiceAccounts, runtimes).
SUBDOMAIN_PATTERN = (
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def knob(default: Any = MISSING, **rules: Any) -> Any:
    """A dataclass field with a default and validation rules kept in its metadata."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=rules)
    return field(default=default, metadata=rules)
