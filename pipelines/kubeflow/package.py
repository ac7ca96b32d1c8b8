"""A compiled pipeline as the exact bytes to upload, and its run parameters checked and typed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import ConfigError
from pipelines.kubeflow.connection import KubeflowError

__all__ = ["PipelinePackage"]


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
