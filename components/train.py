"""Train a binary classifier on the etl train split, validating on the validation split.

Single process; the :class:`Trainer` lifecycle (``setup`` -> ``train`` -> ``save``) leaves
room for distributed training and checkpointing. Training is seeded and deterministic:
the same data and params give byte-identical weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from components.errors import DataError, ParamError
from components.features import FeatureSpec, load_feature_spec
from components.io import iter_batches, read_manifest, split_parts
from components.model_artifact import save_model
from components.models import build_model

__all__ = ["Trainer", "TrainerConfig", "load_split", "roc_auc", "run"]

log = logging.getLogger(__name__)

READ_BATCH_ROWS = 65_536
EVAL_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class TrainerConfig:
    """Optimisation settings (``trainer`` params).

    ``optimizer`` is "adam", "adamw" or "sgd" (SGD uses momentum 0.9); ``threads`` = 0
    keeps torch's default thread count.
    """

    epochs: int = 10
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    seed: int = 0
    threads: int = 0

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> TrainerConfig:
        """Build from ``trainer`` params; keys for other trainers (e.g. nodes) are ignored.

        Raises:
            ParamError: an unknown optimizer, ``epochs`` or ``batch_size`` below 1, or a
                non-positive ``lr``.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in params.items() if k in names})
        if config.optimizer not in _OPTIMIZERS:
            raise ParamError(
                f"trainer.optimizer {config.optimizer!r} is unknown; expected one of "
                f"{sorted(_OPTIMIZERS)}"
            )
        for key in ("epochs", "batch_size"):
            if getattr(config, key) < 1:
                raise ParamError(f"trainer.{key}={getattr(config, key)} must be at least 1")
        if not config.lr > 0:
            raise ParamError(f"trainer.lr={config.lr} must be positive")
        return config


Tensors = tuple[torch.Tensor, torch.Tensor]  # (features, labels)

_OPTIMIZERS = {
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay),
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=0.9, weight_decay=c.weight_decay),
}


class Trainer:
    """Trains a model built from ``model_cfg`` on in-memory feature tensors.

    Call :meth:`setup`, then :meth:`train`, then :meth:`save`.
    """

    def __init__(self, model_cfg: dict[str, Any], config: TrainerConfig, spec: FeatureSpec) -> None:
        self.model_cfg = model_cfg
        self.config = config
        self.spec = spec
        self.history: list[dict[str, float | int]] = []
        self.samples_per_s = 0.0

    def setup(self, train: Tensors, validation: Tensors) -> None:
        """Seed, build the model and optimizer, and hold the (features, labels) tensors."""
        torch.manual_seed(self.config.seed)
        self.train_x, self.train_y = train
        self.val_x, self.val_y = validation
        self.model = build_model(self.model_cfg, self.train_x.shape[1])
        self._check_output_shape()
        self.optimizer = _OPTIMIZERS[self.config.optimizer](self.model.parameters(), self.config)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.generator = torch.Generator().manual_seed(self.config.seed)

    def train(self) -> dict[str, float | int]:
        """Run every epoch, logging and recording losses; return the final metrics."""
        rows, batch_size = len(self.train_y), self.config.batch_size
        train_seconds = 0.0
        for epoch in range(1, self.config.epochs + 1):
            start = time.perf_counter()
            self.model.train()
            total = 0.0
            order = torch.randperm(rows, generator=self.generator)
            for offset in range(0, rows, batch_size):
                index = order[offset : offset + batch_size]
                self.optimizer.zero_grad(set_to_none=True)
                logits = self.model(self.train_x[index])[:, 0]
                loss = self.loss_fn(logits, self.train_y[index])
                loss.backward()
                self.optimizer.step()
                total += loss.item() * len(index)
            train_seconds += time.perf_counter() - start
            val_loss, val_auc, val_accuracy = self._validate()
            self.history.append(
                {
                    "epoch": epoch,
                    "train_loss": total / rows,
                    "val_loss": val_loss,
                    "val_roc_auc": val_auc,
                    "val_accuracy": val_accuracy,
                }
            )
            log.info(
                "epoch %d/%d: train loss %.4f, val loss %.4f, val ROC AUC %.4f",
                epoch,
                self.config.epochs,
                total / rows,
                val_loss,
                val_auc,
            )
        self.samples_per_s = rows * self.config.epochs / train_seconds
        return self.metrics

    @property
    def metrics(self) -> dict[str, float | int]:
        """Last epoch's losses and validation scores."""
        last = self.history[-1]
        return {k: v for k, v in last.items() if k != "epoch"} | {"epochs": last["epoch"]}

    def save(self, directory: str) -> dict[str, Any]:
        """Write the model artifact (see :mod:`components.model_artifact`)."""
        return save_model(
            directory,
            self.model,
            model_cfg=self.model_cfg,
            spec=self.spec,
            metrics=self.metrics,
            history=self.history,
        )

    def _validate(self) -> tuple[float, float, float]:
        self.model.eval()
        with torch.inference_mode():
            logits = torch.cat(
                [self.model(x)[:, 0] for x in self.val_x.split(EVAL_BATCH_ROWS)]
            ).double()
            labels = self.val_y.double()
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
        scores = torch.sigmoid(logits).numpy()
        accuracy = float(((scores >= 0.5) == (labels.numpy() == 1)).mean())
        return loss, roc_auc(labels.numpy(), scores, "validation"), accuracy

    def _check_output_shape(self) -> None:
        self.model.eval()
        with torch.inference_mode():
            shape = tuple(self.model(self.train_x[:1]).shape)
        if shape != (1, 1):
            raise ParamError(
                f"model {self.model_cfg.get('_target_')!r} returns shape {shape} for one row; "
                "binary classification needs one logit per row (set output_dim: 1)"
            )


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Train on ``dataset`` with the etl ``feature_spec``; write the model artifact.

    Args:
        inputs: ``dataset`` and ``feature_spec`` directories from etl.
        params: ``model`` (a ``_target_`` config), ``trainer`` (see :class:`TrainerConfig`)
            and ``target`` (must match the feature spec's target).
        outputs: ``model``: directory to create.

    Returns:
        Final train/validation metrics, ``epochs``, ``samples_per_s`` and ``seconds``.
    """
    start = time.perf_counter()
    dataset_dir, spec_dir = str(inputs["dataset"]), str(inputs["feature_spec"])
    config = TrainerConfig.from_dict(dict(params.get("trainer") or {}))
    spec = load_feature_spec(spec_dir)
    manifest = read_manifest(dataset_dir)
    if manifest["feature_spec_version"] != spec.version:
        raise DataError(
            f"dataset {dataset_dir} was built with feature spec "
            f"{manifest['feature_spec_version'][:12]} but {spec_dir} holds {spec.version[:12]}; "
            "pass the dataset and feature_spec outputs of the same etl run"
        )
    target = params.get("target", spec.target)
    if target != spec.target:
        raise DataError(
            f"target {target!r} differs from the feature spec's target {spec.target!r}; "
            "re-run etl with this target or train on the etl target"
        )
    with _torch_determinism(config.threads):
        trainer = Trainer(dict(params["model"]), config, spec)
        trainer.setup(
            _tensors(load_split(dataset_dir, "train", spec)),
            _tensors(load_split(dataset_dir, "validation", spec)),
        )
        log.info(
            "training on %d rows x %d features, validating on %d rows",
            *trainer.train_x.shape,
            len(trainer.val_y),
        )
        metrics = trainer.train()
        trainer.save(outputs["model"])
    seconds = time.perf_counter() - start
    return metrics | {
        "samples_per_s": round(trainer.samples_per_s, 1),
        "seconds": round(seconds, 3),
    }


def load_split(dataset_dir: str, split: str, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Stream a split's Parquet parts through ``spec``; return (features, labels) arrays."""
    columns = [*spec.input_columns, str(spec.target)]
    features: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for path in split_parts(dataset_dir, split):
        for batch in iter_batches(path, columns, READ_BATCH_ROWS):
            features.append(spec.transform(batch))
            labels.append(spec.labels(batch))
    if not labels or sum(len(y) for y in labels) == 0:
        raise DataError(
            f"the {split} split of {dataset_dir} has no rows; add data or raise its split fraction"
        )
    return np.concatenate(features), np.concatenate(labels)


def roc_auc(labels: np.ndarray, scores: np.ndarray, split: str) -> float:
    """ROC AUC, with a clear error when the split holds a single class (AUC undefined)."""
    classes = np.unique(labels)
    if len(classes) < 2:
        raise DataError(
            f"the {split} split has only label {classes.tolist()}, so ROC AUC is undefined; "
            "use more rows or a larger split fraction"
        )
    return float(roc_auc_score(labels, scores))


def _tensors(arrays: tuple[np.ndarray, np.ndarray]) -> Tensors:
    return torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1])


@contextlib.contextmanager
def _torch_determinism(threads: int) -> Iterator[None]:
    """Deterministic kernels, a fixed thread count and a private RNG, restored on exit."""
    saved_threads = torch.get_num_threads()
    saved_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        try:
            if threads > 0:
                torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(True)
            yield
        finally:
            torch.set_num_threads(saved_threads)
            torch.use_deterministic_algorithms(saved_deterministic)
