"""The model artifact: weights, metadata and feature spec, written by train, read by scoring.

A model directory holds ``model.pt`` (a ``state_dict``, loadable with
``torch.load(..., weights_only=True)``), ``feature_spec.json``, ``history.json`` (metrics per
epoch) and ``model.json``, which is written last and records the model config, the task and
its classes, the full feature spec, the metrics, the weights' digest (the version) and the
hash of the training config. Loading needs only :mod:`components.models` (to rebuild the
architecture) and the feature spec: none of the training code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from typing import Any

import torch
from torch import nn

from components.data.features import FeatureSpec
from components.errors import DataError
from components.io.files import atomic_path, read_json, write_json
from components.models import build_model
from components.names import FEATURE_SPEC_FILE, MODEL_META_FILE, MODEL_WEIGHTS_FILE

__all__ = [
    "HISTORY_FILE",
    "load_model",
    "save_model",
    "scores_from_logits",
]

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"
FORMAT_VERSION = 2


def save_model(
    directory: str,
    model: nn.Module,
    *,
    model_cfg: dict[str, Any],
    spec: FeatureSpec,
    metrics: dict[str, float | int],
    history: list[dict[str, float | int]],
    target: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the model artifact into ``directory`` (``model.json`` last); return its metadata.

    The version is the first 16 hex digits of the sha256 of ``model.pt``, so equal weights
    give equal versions. ``target`` is :meth:`components.data.labels.Target.to_dict` (binary on
    the spec's target when absent); ``extra`` adds keys such as the config hash.
    """
    target = target or {"task": "binary", "column": spec.target, "classes": ["0", "1"]}
    output_dim = len(target["classes"]) if target["task"] == "multiclass" else 1
    os.makedirs(directory, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = buffer.getvalue()
    with atomic_path(os.path.join(directory, MODEL_WEIGHTS_FILE)) as tmp, open(tmp, "wb") as f:
        f.write(weights)
    write_json(os.path.join(directory, FEATURE_SPEC_FILE), spec.to_dict())
    write_json(os.path.join(directory, HISTORY_FILE), history)
    meta = {
        "format": FORMAT_VERSION,
        "model": model_cfg,
        "input_dim": len(spec.feature_names),
        "output_dim": output_dim,
        "task": target["task"],
        "classes": list(target["classes"]),
        "feature_spec": spec.to_dict(),
        "feature_spec_version": spec.version,
        "version": hashlib.sha256(weights).hexdigest()[:16],
        "target": spec.target,
        "metrics": metrics,
        "history": history,
        **(extra or {}),
    }
    write_json(os.path.join(directory, MODEL_META_FILE), meta)
    return meta


def load_model(directory: str) -> tuple[nn.Module, FeatureSpec, dict[str, Any]]:
    """Load a model artifact for scoring.

    Returns:
        The model in eval mode, its feature spec, and the ``model.json`` metadata (with
        ``task`` and ``classes``; artifacts from before tasks existed read as binary).
    """
    meta = read_json(os.path.join(directory, MODEL_META_FILE), what="the train step")
    meta.setdefault("task", "binary")
    meta.setdefault("classes", ["0", "1"])
    spec = FeatureSpec.from_dict(meta["feature_spec"])
    path = os.path.join(directory, MODEL_WEIGHTS_FILE)
    with open(path, "rb") as f:
        weights = f.read()
    digest = hashlib.sha256(weights).hexdigest()[:16]
    if digest != meta["version"]:
        raise DataError(
            f"{path} has digest {digest} but model.json records version {meta['version']}; "
            "the weights were replaced after training: re-run train"
        )
    model = build_model(meta["model"], meta["input_dim"], meta.get("output_dim", 1))
    model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True, map_location="cpu"))
    model.eval()
    log.info("loaded model %s from %s", meta["version"], directory)
    return model, spec, meta


def scores_from_logits(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Scores of a ``task``'s logits: binary P(classes[1]) of shape ``(n,)``, multiclass
    softmax probabilities ``(n, k)``, regression the predicted values ``(n,)``."""
    if task == "binary":
        return torch.sigmoid(logits[:, 0])
    if task == "multiclass":
        return torch.softmax(logits, dim=1)
    if task == "regression":
        return logits[:, 0]
    raise DataError(f"model task {task!r} is unknown; expected binary, multiclass or regression")
