"""Deterministic YAML text and the kustomize objects of the tree: kustomizations,
components and JSON 6902 patches."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

__all__ = ["component", "dump_yaml", "json_patch", "kustomization", "op"]


def dump_yaml(documents: Sequence[Mapping[str, Any]]) -> str:
    """YAML documents with sorted keys, block style and no aliases (same input, same bytes)."""
    return "---\n".join(
        yaml.dump(
            json.loads(json.dumps(doc)),  # plain types only: no tuples, no shared references
            Dumper=_Dumper,
            sort_keys=True,
            default_flow_style=False,
            width=100,
            allow_unicode=True,
        )
        for doc in documents
    )


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def kustomization(resources: list[str], extra: Mapping[str, Any] | None = None) -> str:
    """A ``Kustomization`` of ``resources`` (plus ``extra`` fields), as YAML text."""
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        **(extra or {}),
    }
    return dump_yaml([body])


def component(resources: list[str]) -> str:
    """A kustomize ``Component`` of ``resources``, as YAML text."""
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "resources": resources,
    }
    return dump_yaml([body])


def op(op: str, path: str, value: Any) -> dict[str, Any]:
    """One JSON 6902 operation."""
    return {"op": op, "path": path, "value": value}


def json_patch(kind: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A kustomize JSON 6902 patch of one resource, its operations as a YAML list."""
    text = yaml.dump(ops, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=100)
    return {"patch": text, "target": {"kind": kind, "name": name}}
