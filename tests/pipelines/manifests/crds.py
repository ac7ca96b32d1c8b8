"""Validate custom resources against the upstream CRD schemas in ``crds_upstream/``.

The CRD files are vendored test data (see that folder's README for their provenance);
kfbatch never reads them at run time. What the README's "quirks" say a
validator must do is done here: pick the ``spec.versions`` entry by the resource's
``apiVersion``, check ``apiVersion``/``kind``/scope by hand, make every object node that
lists its properties reject unknown fields (the API server's strict field validation),
validate the JSON form (no YAML 1.1 surprises), and re-check the TrainJob rules that live
in CEL (name, ``numProcPerNode >= 1``) and the list-map keys jsonschema ignores.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = ["SCHEMAS_DIR", "crd_errors", "is_custom"]

#: The vendored CRDs, or another folder of the same layout in ``KFBATCH_CRD_SCHEMAS``.
SCHEMAS_DIR = Path(os.environ.get("KFBATCH_CRD_SCHEMAS", Path(__file__).parent / "crds_upstream"))

_RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@functools.cache
def _crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(group/version, kind) -> CRD document, for every CRD file."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(SCHEMAS_DIR.rglob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            for doc in yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                for version in doc["spec"]["versions"]:
                    key = (
                        f"{doc['spec']['group']}/{version['name']}",
                        doc["spec"]["names"]["kind"],
                    )
                    found[key] = doc
    return found


@functools.cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    crd = _crds()[(api_version, kind)]
    version = api_version.rsplit("/", 1)[1]
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]
    strict = _close(copy.deepcopy(schema["openAPIV3Schema"]))
    cls = jsonschema.validators.validator_for(strict)
    cls.check_schema(strict)
    return cls(strict)


def _close(node: Any) -> Any:
    """Add ``additionalProperties: false`` where a node lists its properties (README quirk 6)."""
    if isinstance(node, dict):
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _close(value)
    elif isinstance(node, list):
        for value in node:
            _close(value)
    return node


def is_custom(resource: Mapping[str, Any]) -> bool:
    """Whether an upstream CRD defines this resource's kind."""
    return (resource.get("apiVersion"), resource.get("kind")) in _crds()


def crd_errors(resource: Mapping[str, Any]) -> list[str]:
    """Every problem of ``resource`` against its CRD, as ``path: message`` lines."""
    key = (resource.get("apiVersion"), resource.get("kind"))
    if key not in _crds():
        return [f"no upstream CRD for {key[1]} {key[0]}"]
    crd = _crds()[key]
    plain = json.loads(json.dumps(resource))  # the JSON form the API server receives
    errors = [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in _validator(*key).iter_errors(plain)
    ]
    meta = plain.get("metadata") or {}
    if crd["spec"]["scope"] == "Cluster" and "namespace" in meta:
        errors.append("metadata.namespace: a cluster-scoped resource has no namespace")
    if not isinstance(meta.get("name"), str):
        errors.append("metadata.name: required")
    if key[1] == "TrainJob":
        name = meta.get("name", "")
        if not _RFC1035.match(name) or len(name) > 63:
            errors.append(f"metadata.name: {name!r} is not an RFC 1035 label (TrainJob CEL rule)")
        if plain.get("spec", {}).get("trainer", {}).get("numProcPerNode", 1) < 1:
            errors.append("spec.trainer.numProcPerNode: must be >= 1 (TrainJob CEL rule)")
    errors.extend(_duplicate_map_keys(plain))
    return errors


def _duplicate_map_keys(node: Any, path: str = "") -> Iterator[str]:
    """Lists keyed by ``name`` (containers, env, volumes, mounts) must not repeat a name."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _duplicate_map_keys(value, f"{path}/{key}")
    elif isinstance(node, list):
        names = [item.get("name") for item in node if isinstance(item, dict) and "name" in item]
        if len(names) != len(set(names)) and path.rsplit("/", 1)[-1] in {
            "containers",
            "env",
            "volumes",
            "volumeMounts",
            "replicatedJobs",
        }:
            yield f"{path}: duplicate names {sorted(names)}"
        for index, item in enumerate(node):
            yield from _duplicate_map_keys(item, f"{path}/{index}")
