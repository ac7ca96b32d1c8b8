"""Train a model on the etl train split: distributed, checkpointed, resumable, deterministic.

The step's world size is ``trainer.nodes x trainer.procs_per_node``. Started by the local
runner (or a KFP pod) with no rendezvous in the environment, :func:`run` starts the ranks on
this machine itself (``torch.multiprocessing`` spawn, a free port, gloo on CPU, nccl on GPU);
started by ``torchrun`` (or a Kubeflow TrainJob) it *is* one rank and reads ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` from the environment::

    torchrun --nnodes=2 --nproc-per-node=4 -m components.train \\
        --inputs '{"dataset": "/data/dataset", "feature_spec": "/data/spec"}' \\
        --params "$(cat train-params.json)" --outputs '{"model": "/out/model"}'

Data streams from the Parquet parts (:mod:`components.training.stream`). Checkpoints
(:mod:`components.training.checkpoint`) hold the model, optimizer, scheduler, grad scaler, every
rank's RNG states and the sampler position; a re-run of the same step (same params and
data) finds them under a key derived from both and resumes, ending with bitwise the same
weights as a run that was never interrupted (on CPU).

A ``variant`` param turns the step into one branch of a fan-out: ``fold`` trains on the
other folds of the train split and validates on this one (cross-validation); ``overrides``
set dotted ``model.*`` / ``trainer.*`` keys (a tuning trial).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
from torch import nn

from components.data.features import FeatureSpec, load_feature_spec
from components.data.labels import Target, fit_target
from components.errors import DataError, KfbatchError, ParamError
from components.evaluation import metrics as task_metrics
from components.io.files import iter_batches, read_json, read_manifest, split_parts, write_json
from components.model_artifact import save_model
from components.models import build_model
from components.names import BEST_FILE, CHECKPOINT_DIR_ENV
from components.params import TrainerParams, TrainParams
from components.training.checkpoint import CheckpointStore
from components.training.stream import ShardStream, list_chunks

__all__ = [
    "ResumeState",
    "Trainer",
    "apply_overrides",
    "fold_assignment",
    "run",
]

log = logging.getLogger("components.train")  # also when run as __main__

EVAL_BATCH_ROWS = 65_536
READ_BATCH_ROWS = 262_144


@dataclass
class ResumeState:
    """Where training stands, beyond the model and optimizer: saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # global batches done in the current epoch (the sampler position)
    step: int = 0  # optimizer steps in total
    epoch_loss: float = 0.0  # this rank's loss sum over the current epoch so far
    epoch_rows: int = 0
    history: list[dict[str, float | int]] = field(default_factory=list)
    best: float | None = None
    bad_epochs: int = 0
    stopped_early: bool = False

    def state_dict(self) -> dict[str, Any]:
        """Plain values only, so ``torch.load(weights_only=True)`` reads them."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, copy.deepcopy(state[f.name]))


@dataclass(frozen=True)
class Dist:
    """This process's place in the world."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the one that writes files."""
        return self.rank == 0


class Trainer:
    """One rank's training: ``setup`` -> ``load_checkpoint`` -> ``train`` -> ``cleanup``.

    Rank 0 writes checkpoints (:meth:`save_checkpoint`) and the model artifact
    (:meth:`save_model`); every rank holds identical replicas (DDP) or shards (FSDP).
    """

    def __init__(
        self,
        *,
        model_cfg: dict[str, Any],
        config: TrainerParams,
        spec: FeatureSpec,
        target: Target,
        dist_info: Dist,
        checkpoints: CheckpointStore | None,
    ) -> None:
        self.model_cfg, self.config, self.spec, self.target = model_cfg, config, spec, target
        self.dist, self.checkpoints = dist_info, checkpoints
        self.state = ResumeState()
        self.train_seconds = 0.0
        self.checkpoint_seconds = 0.0
        self.samples = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ lifecycle

    def setup(self, train: ShardStream, validation: tuple[np.ndarray, np.ndarray]) -> None:
        """Pick the device and precision, seed, build the model, optimizer and schedule."""
        config = self.config
        self.device = _device(config.device, self.dist.local_rank)
        self.amp_dtype = _amp_dtype(config.precision, self.device)
        torch.manual_seed(config.seed)
        self.train_stream = train
        self.val_x = torch.from_numpy(validation[0])
        self.val_y = torch.from_numpy(validation[1])
        module = build_model(self.model_cfg, len(self.spec.feature_names), self.target.output_dim)
        _check_output_shape(module, self.val_x[:1], self.target, self.model_cfg)
        self.module = module.to(self.device)
        self.model = self._wrap(self.module)
        self.optimizer = _optimizer(self.model.parameters(), config)
        self.steps_per_epoch = math.ceil(train.batches_per_epoch / config.accumulate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(config, self.steps_per_epoch)
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.loss_fn = _loss(self.target.task)
        self.stop_metric = config.early_stopping.metric
        names = task_metrics.validation_names(self.target.task)
        if self.stop_metric and self.stop_metric not in names:
            raise ParamError(
                f"trainer.early_stopping.metric {self.stop_metric!r} is not a validation metric "
                f"of a {self.target.task} task; expected one of {names}"
            )

    def load_checkpoint(self) -> bool:
        """Resume from the newest valid checkpoint, if any; return whether one was loaded."""
        if self.checkpoints is None:
            return False
        state = self.checkpoints.load_latest()
        if state is None:
            return False
        self._set_model_state(state["model"])
        self._set_optimizer_state(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.state.load_state_dict(state["resume"])
        self.best_weights = state.get("best_weights") or None
        rng = state["rng"]
        if len(rng) == self.dist.world:
            torch.set_rng_state(rng[self.dist.rank]["cpu"])
            if self.device.type == "cuda" and rng[self.dist.rank].get("cuda") is not None:
                torch.cuda.set_rng_state(rng[self.dist.rank]["cuda"], self.device)
        else:
            log.warning(
                "checkpoint was written by %d ranks, this run has %d: RNG states are not "
                "restored, so dropout draws differ from an uninterrupted run",
                len(rng),
                self.dist.world,
            )
        log.info(
            "resumed at epoch %d, batch %d, step %d",
            self.state.epoch + 1,
            self.state.batch,
            self.state.step,
        )
        return True

    def save_checkpoint(self) -> None:
        """Write the full training state (collective: every rank must call it)."""
        if self.checkpoints is None:
            return
        start = time.perf_counter()
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        rngs = _all_gather(rng, self.dist)
        model_state = self._model_state()
        optimizer_state = self._optimizer_state()
        if self.dist.main:
            self.checkpoints.save(
                self.state.epoch * self.train_stream.batches_per_epoch + self.state.batch,
                {
                    "model": model_state,
                    "optimizer": optimizer_state,
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "resume": self.state.state_dict(),
                    "rng": rngs,
                    "best_weights": self.best_weights or {},
                },
            )
        _barrier(self.dist)
        self.checkpoint_seconds += time.perf_counter() - start

    def train(self) -> dict[str, float | int]:
        """Train until the last epoch or early stopping; return the final metrics."""
        config = self.config
        every = config.checkpoint.every_n_steps
        while self.state.epoch < config.epochs and not self.state.stopped_early:
            epoch = self.state.epoch
            start = time.perf_counter()
            paused = self.checkpoint_seconds
            self.model.train()
            micro = 0
            for x, y, global_rows in self.train_stream.epoch(epoch, self.state.batch):
                micro += 1
                last = self.state.batch + 1 == self.train_stream.batches_per_epoch
                boundary = micro % config.accumulate == 0 or last
                loss = self._forward_backward(x, y, global_rows, sync=boundary)
                self.state.epoch_loss += float(loss)
                self.state.epoch_rows += len(y)
                self.state.batch += 1
                if not boundary:
                    continue
                self._optimizer_step()
                if every and self.state.step % every == 0 and not last:
                    self.save_checkpoint()
            self.samples += self.state.epoch_rows
            train_loss = _all_reduce_sum(
                torch.tensor(
                    [self.state.epoch_loss, self.state.epoch_rows],
                    dtype=torch.float64,
                    device=self.device,  # nccl reduces CUDA tensors only
                ),
                self.dist,
            ).cpu()
            self.train_seconds += time.perf_counter() - start - (self.checkpoint_seconds - paused)
            record = {
                "epoch": epoch + 1,
                "train_loss": float(train_loss[0] / max(train_loss[1], 1)),
            }
            record |= self._validate()
            record["lr"] = float(self.scheduler.get_last_lr()[0])
            self.state.history.append(record)
            self.state.epoch, self.state.batch = epoch + 1, 0
            self.state.epoch_loss, self.state.epoch_rows = 0.0, 0
            self._early_stopping(record)
            log.info(
                "epoch %d/%d: %s",
                epoch + 1,
                config.epochs,
                ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"),
            )
            self.save_checkpoint()
        if self.best_weights:
            self._set_model_state(self.best_weights)
        return self.metrics

    def cleanup(self) -> None:
        """Leave the process group (the checkpoints stay until the artifact is written)."""
        if dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------------ results

    @property
    def metrics(self) -> dict[str, float | int]:
        """The reported epoch's metrics (the best one with early stopping), plus counts."""
        history = self.state.history
        chosen = history[-1]
        if self.stop_metric and self.state.best is not None:
            chosen = next(h for h in history if h.get(self.stop_metric) == self.state.best)
        out = {k: v for k, v in chosen.items() if k not in ("epoch", "lr")}
        return out | {"epochs": len(history), "best_epoch": chosen["epoch"]}

    def save_model(self, directory: str, *, extra: dict[str, Any]) -> dict[str, Any] | None:
        """Rank 0 writes the model artifact (collective: every rank must call it)."""
        state = self._model_state()
        if not self.dist.main:
            return None
        model = build_model(self.model_cfg, len(self.spec.feature_names), self.target.output_dim)
        model.load_state_dict(state)
        return save_model(
            directory,
            model,
            model_cfg=self.model_cfg,
            spec=self.spec,
            metrics=self.metrics,
            history=self.state.history,
            target=self.target.to_dict(),
            extra=extra,
        )

    # ------------------------------------------------------------------ internals

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.dist.world == 1:
            return module
        if self.config.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for child in module.modules():
                if isinstance(child, nn.Linear):
                    fully_shard(child)
            return fully_shard(module)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def _forward_backward(
        self, x: np.ndarray, y: np.ndarray, global_rows: int, *, sync: bool
    ) -> torch.Tensor:
        inputs = torch.from_numpy(x).to(self.device, non_blocking=True)
        labels = torch.from_numpy(y).to(self.device, non_blocking=True)
        no_sync = (
            self.model.no_sync()
            if not sync and isinstance(self.model, nn.parallel.DistributedDataParallel)
            else contextlib.nullcontext()
        )
        # Sum over this rank's rows scaled so that DDP's mean over ranks is the mean over the
        # global batch: 1 rank and N ranks then take the same optimizer steps.
        scale = self.dist.world / (global_rows * self.config.accumulate)
        with no_sync:  # forward and backward: DDP skips the all-reduce between boundaries
            with _autocast(self.device, self.amp_dtype):
                logits = self.model(inputs)
            loss_sum = self.loss_fn(logits.float(), labels)
            self.scaler.scale(loss_sum * scale).backward()
        return loss_sum.detach().double().cpu()

    def _optimizer_step(self) -> None:
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.state.step += 1

    def _validate(self) -> dict[str, float]:
        self.model.eval()
        with torch.inference_mode(), _autocast(self.device, self.amp_dtype):
            logits = torch.cat(
                [
                    self.model(x.to(self.device)).float().cpu()
                    for x in self.val_x.split(EVAL_BATCH_ROWS)
                ]
            )
        return task_metrics.validation(self.target.task, logits.double(), self.val_y)

    def _early_stopping(self, record: dict[str, Any]) -> None:
        if not self.stop_metric:
            return
        stopping = self.config.early_stopping
        value = float(record[self.stop_metric])
        sign = 1.0 if stopping.mode == "max" else -1.0
        delta = stopping.min_delta
        if self.state.best is None or sign * (value - self.state.best) > delta:
            self.state.best, self.state.bad_epochs = value, 0
            self.best_weights = {k: v.clone() for k, v in self._model_state().items()}
            return
        self.state.bad_epochs += 1
        if self.state.bad_epochs >= stopping.patience:
            self.state.stopped_early = True
            log.info(
                "early stopping: %s has not improved on %.4g for %d epochs",
                self.stop_metric,
                self.state.best,
                self.state.bad_epochs,
            )

    def _model_state(self) -> dict[str, torch.Tensor]:
        if self.config.strategy == "fsdp" and self.dist.world > 1:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_model_state_dict(self.model, options=options)
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}

    def _set_model_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.config.strategy == "fsdp" and self.dist.world > 1:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True))
            return
        self.module.load_state_dict(state)

    def _optimizer_state(self) -> dict[str, Any]:
        if self.config.strategy == "fsdp" and self.dist.world > 1:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_optimizer_state_dict,
            )

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_optimizer_state_dict(self.model, self.optimizer, options=options)
        return _to_cpu(self.optimizer.state_dict())

    def _set_optimizer_state(self, state: dict[str, Any]) -> None:
        if self.config.strategy == "fsdp" and self.dist.world > 1:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_optimizer_state_dict,
            )

            set_optimizer_state_dict(
                self.model, self.optimizer, state, options=StateDictOptions(full_state_dict=True)
            )
            return
        self.optimizer.load_state_dict(state)


# ---------------------------------------------------------------------- the step


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Train on ``dataset`` with the etl ``feature_spec``; write the model artifact.

    Args:
        inputs: ``dataset`` and ``feature_spec`` directories from etl; optionally ``best``,
            a tuning select output whose chosen overrides are applied first.
        params: ``model`` (a ``_target_`` config), ``trainer`` (see :class:`TrainerParams`),
            ``target``, ``task`` (binary, multiclass or regression), optionally ``variant``
            (``fold`` and/or ``trial`` + ``overrides``) and ``cv`` (fold settings).
        outputs: ``model``: directory to create.

    Returns:
        The final validation metrics, ``epochs``, ``samples_per_s``, ``seconds`` and
        ``checkpoint_seconds`` (rank 0's; other ranks under torchrun return ``{}``).
    """
    params, tuned = _resolve(inputs, params)
    world_size = TrainParams.parse(params).trainer.world_size
    if "WORLD_SIZE" in os.environ:  # started by torchrun / a TrainJob: this process is a rank
        return _rank(inputs, params, outputs, _env_dist(), tuned=tuned, result_path=None)
    if world_size == 1:
        return _rank(inputs, params, outputs, Dist(), tuned=tuned, result_path=None)
    return _spawn(inputs, params, outputs, world_size, tuned)


def _resolve(
    inputs: dict[str, Any], params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Params with the variant's (and a tuning select's) overrides applied, and the tuning
    select's pick (None without one)."""
    params, tuned = copy.deepcopy(params), None
    if inputs.get("best"):
        best = read_json(os.path.join(str(inputs["best"]), BEST_FILE), what="tune_select")
        params = apply_overrides(params, best["overrides"])
        tuned = {"trial": best["trial"], "overrides": best["overrides"]}
    variant = params.get("variant") or {}
    if variant.get("overrides"):
        params = apply_overrides(params, variant["overrides"])
    return params, tuned


def apply_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted ``model.*`` / ``trainer.*`` keys (from a tuning space) in step params.

    Raises:
        ParamError: a key outside ``model.`` and ``trainer.``.
    """
    params = copy.deepcopy(params)
    for key, value in overrides.items():
        group, _, rest = key.partition(".")
        if group not in ("model", "trainer") or not rest:
            raise ParamError(
                f"tuning key {key!r} cannot be applied; tune model.* or trainer.* keys"
            )
        node = params.setdefault(group, {})
        *parents, leaf = rest.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return params


def _rank(
    inputs: dict[str, Any],
    params: dict[str, Any],
    outputs: dict[str, str],
    where: Dist,
    *,
    tuned: dict[str, Any] | None,
    result_path: str | None,
) -> dict[str, Any]:
    """Everything one rank does: read, set up, resume, train, write (rank 0), clean up."""
    start = time.perf_counter()
    typed = TrainParams.parse(params)
    config = typed.trainer
    dataset_dir, spec_dir = str(inputs["dataset"]), str(inputs["feature_spec"])
    spec = load_feature_spec(spec_dir)
    manifest = read_manifest(dataset_dir)
    if manifest["feature_spec_version"] != spec.version:
        raise DataError(
            f"dataset {dataset_dir} was built with feature spec "
            f"{manifest['feature_spec_version'][:12]} but {spec_dir} holds {spec.version[:12]}; "
            "pass the dataset and feature_spec outputs of the same etl run"
        )
    target_name = typed.target
    if target_name != spec.target:
        raise DataError(
            f"target {target_name!r} differs from the feature spec's target {spec.target!r}; "
            "re-run etl with this target or train on the etl target"
        )
    train_parts = split_parts(dataset_dir, "train")
    target = fit_target(typed.task, target_name, train_parts)
    threads = config.threads // where.world if config.threads else 0
    with _torch_determinism(max(threads, 1) if config.threads else 0):
        if where.world > 1 and not dist.is_initialized():
            backend = "nccl" if _device(config.device, where.local_rank).type == "cuda" else "gloo"
            dist.init_process_group(backend, rank=where.rank, world_size=where.world)
        try:
            stream, validation = _data(dataset_dir, train_parts, spec, target, typed, where)
            key = _run_key(params, manifest, spec)
            store = _checkpoint_store(config, key)
            trainer = Trainer(
                model_cfg=dict(typed.model),
                config=config,
                spec=spec,
                target=target,
                dist_info=where,
                checkpoints=store,
            )
            trainer.setup(stream, validation)
            if where.main:
                log.info(
                    "training %s on %d rows x %d features (%d rank%s), validating on %d rows",
                    target.task,
                    stream.rows,
                    len(spec.feature_names),
                    where.world,
                    "s" if where.world > 1 else "",
                    len(validation[1]),
                )
            trainer.load_checkpoint()
            metrics = trainer.train()
            extra = {
                "config_hash": key,
                "variant": typed.variant,
                "tuned": tuned,
                "trainer": params["trainer"],
            }
            trainer.save_model(outputs["model"], extra=extra)
            _barrier(where)
            if store is not None and where.main:
                store.clear()  # the artifact exists: a re-run trains afresh (same result)
        finally:
            if where.world > 1 and dist.is_initialized():
                dist.destroy_process_group()
    result = metrics | {
        "samples_per_s": round(trainer.samples / max(trainer.train_seconds, 1e-9), 1),
        "seconds": round(time.perf_counter() - start, 3),
        "train_seconds": round(trainer.train_seconds, 4),
        "checkpoint_seconds": round(trainer.checkpoint_seconds, 4),
        "world_size": where.world,
    }
    if result_path is not None and where.main:
        with open(result_path, "w", encoding="utf-8") as f:
            json.dump(result, f)
    return result if where.main else {}


def _data(
    dataset_dir: str,
    train_parts: list[str],
    spec: FeatureSpec,
    target: Target,
    params: TrainParams,
    where: Dist,
) -> tuple[ShardStream, tuple[np.ndarray, np.ndarray]]:
    """The training stream and the validation arrays (a held-out fold, or the split)."""
    columns = [*spec.input_columns, target.column]

    def transform(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        return spec.transform(table), target.encode(table)

    chunks = list_chunks(train_parts)
    config = params.trainer
    fold = (params.variant or {}).get("fold")
    keep = None
    if fold is not None:
        if params.cv is None:
            raise ParamError("train: variant names a fold but cv (the fold settings) is null")
        assignment = fold_assignment(
            train_parts,
            target,
            folds=params.cv.folds,
            stratify=params.cv.stratify,
            group_column=params.cv.group_column,
            seed=params.cv.seed,
        )
        keep = assignment != int(fold)
        validation = _read_rows(train_parts, columns, transform, ~keep)
    else:
        validation = _read_rows(split_parts(dataset_dir, "validation"), columns, transform, None)
    if len(validation[1]) == 0:
        raise DataError(
            f"the validation rows of {dataset_dir} are empty; add data or raise "
            "data.split.validation"
        )
    stream = ShardStream(
        chunks,
        columns,
        transform,
        global_batch=config.batch_size,
        rank=where.rank,
        world=where.world,
        seed=config.seed,
        buffer_rows=config.shuffle_buffer_rows,
        keep=keep,
    )
    if stream.rows == 0:
        raise DataError(
            f"the train split of {dataset_dir} has no rows; add data or raise its split fraction"
        )
    return stream, validation


def fold_assignment(
    parts: list[str],
    target: Target,
    *,
    folds: int,
    stratify: bool,
    group_column: str | None,
    seed: int,
) -> np.ndarray:
    """The fold (0..folds-1) of every row of the split, from a scan of its label/group columns.

    Stratified for classification when ``stratify``; rows sharing ``group_column`` stay in
    one fold. Deterministic for a seed, so every fold's branch computes the same assignment.

    Raises:
        DataError: fewer rows (or groups) than folds.
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    columns = [target.column] + ([group_column] if group_column else [])
    labels, groups = [], []
    for path in parts:
        for batch in iter_batches(path, columns, READ_BATCH_ROWS):
            labels.append(target.encode(batch))
            if group_column:
                groups.append(batch.column(group_column).to_numpy(zero_copy_only=False))
    y = np.concatenate(labels)
    group = np.concatenate(groups) if group_column else None
    count = len(np.unique(group)) if group is not None else len(y)
    if count < folds:
        what = f"groups of {group_column!r}" if group_column else "rows"
        raise DataError(
            f"the train split has {count} {what}, fewer than cv.folds={folds}; "
            "lower cv.folds or add data"
        )
    classification = stratify and target.task != "regression"
    if group is not None and classification:
        splitter: Any = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    elif group is not None:
        splitter = GroupKFold(folds, shuffle=True, random_state=seed)
    elif classification:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(folds, shuffle=True, random_state=seed)
    assignment = np.empty(len(y), np.int16)
    for index, (_, held_out) in enumerate(splitter.split(np.zeros(len(y)), y, group)):
        assignment[held_out] = index
    return assignment


def _read_rows(
    parts: list[str], columns: list[str], transform: Any, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    features, labels, offset = [], [], 0
    for path in parts:
        for batch in iter_batches(path, columns, READ_BATCH_ROWS):
            x, y = transform(pa.Table.from_batches([batch]))
            if mask is not None:
                keep = mask[offset : offset + len(y)]
                x, y = x[keep], y[keep]
            offset += batch.num_rows
            features.append(x)
            labels.append(y)
    if not labels:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    return np.concatenate(features), np.concatenate(labels)


def _run_key(params: dict[str, Any], manifest: dict[str, Any], spec: FeatureSpec) -> str:
    """What identifies this training run across re-runs: params (but where checkpoints go),
    the dataset manifest and the feature spec. A re-run with the same key resumes."""
    keyed = copy.deepcopy(params)
    keyed["trainer"].pop("checkpoint", None)
    keyed.pop("run_id", None)
    canonical = json.dumps(
        {"params": keyed, "dataset": manifest, "spec": spec.version},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _checkpoint_store(config: TrainerParams, key: str) -> CheckpointStore | None:
    root = os.environ.get(CHECKPOINT_DIR_ENV) or config.checkpoint.dir
    if not root:
        return None
    return CheckpointStore(os.path.join(os.path.abspath(root), key), keep=config.checkpoint.keep)


# ---------------------------------------------------------------------- processes


def _spawn(
    inputs: dict[str, Any],
    params: dict[str, Any],
    outputs: dict[str, str],
    world: int,
    tuned: dict[str, Any] | None,
) -> dict[str, Any]:
    """Start ``world`` ranks on this machine and wait for them; re-raise a rank's error."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    with tempfile.TemporaryDirectory(prefix="kfbatch-train-") as tmp:
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
        log.info("starting %d ranks on this machine (port %s)", world, env["MASTER_PORT"])
        try:
            mp.start_processes(
                _spawned_rank,
                args=(world, inputs, params, outputs, tuned, env, tmp, os.getpid()),
                nprocs=world,
                start_method="spawn",
                join=True,
            )
        except ProcessException as error:
            raise _rank_error(tmp, error) from None
        with open(os.path.join(tmp, "result.json"), encoding="utf-8") as f:
            return json.load(f)


def _spawned_rank(
    rank: int,
    world: int,
    inputs: dict[str, Any],
    params: dict[str, Any],
    outputs: dict[str, str],
    tuned: dict[str, Any] | None,
    env: dict[str, str],
    tmp: str,
    parent: int,
) -> None:
    """Entry of a rank started by :func:`_spawn`."""
    os.environ.update(env)
    _exit_with(parent)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s rank {rank} %(name)s: %(message)s"
    )
    if rank != 0:
        logging.getLogger("components").setLevel(logging.WARNING)
    try:
        _rank(
            inputs,
            params,
            outputs,
            Dist(rank, world, rank),
            tuned=tuned,
            result_path=os.path.join(tmp, "result.json"),
        )
    except Exception as error:
        with open(os.path.join(tmp, f"error-{rank}.json"), "w", encoding="utf-8") as f:
            json.dump({"type": type(error).__name__, "message": str(error)}, f)
        raise


def _rank_error(tmp: str, error: Exception) -> Exception:
    """The first rank error, as the same kfbatch error class when it was one."""
    classes = {cls.__name__: cls for cls in (DataError, ParamError)}
    for name in sorted(os.listdir(tmp)):
        if name.startswith("error-"):
            with open(os.path.join(tmp, name), encoding="utf-8") as f:
                found = json.load(f)
            cls = classes.get(found["type"])
            rank = name[len("error-") : -len(".json")]
            if cls is not None:
                return cls(found["message"])
            return RuntimeError(f"training rank {rank} failed: {found['type']}: {found['message']}")
    return RuntimeError(f"a training rank died: {' '.join(str(error).split())}")


def _exit_with(parent: int, interval_s: float = 0.5) -> None:
    """Kill this rank when the process that started it is gone (even by SIGKILL).

    On Linux the kernel does it (``PR_SET_PDEATHSIG``), which also works while this rank is
    blocked inside a collective that holds the GIL; elsewhere a watchdog thread polls.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before the call above
                os.kill(os.getpid(), signal.SIGKILL)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="kfbatch-rank-watch", daemon=True).start()


def _env_dist() -> Dist:
    return Dist(
        int(os.environ.get("RANK", 0)),
        int(os.environ["WORLD_SIZE"]),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_gather(obj: Any, where: Dist) -> list[Any]:
    if where.world == 1:
        return [obj]
    gathered: list[Any] = [None] * where.world
    dist.all_gather_object(gathered, obj)
    return gathered


def _all_reduce_sum(tensor: torch.Tensor, where: Dist) -> torch.Tensor:
    if where.world > 1:
        dist.all_reduce(tensor)  # gloo and nccl both sum float64 on the default device
    return tensor


def _barrier(where: Dist) -> None:
    if where.world > 1:
        dist.barrier()


# ---------------------------------------------------------------------- building blocks


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ParamError(
            "trainer.device=cuda but no CUDA device is visible; request a GPU "
            "(resources.steps.train.gpu) or set trainer.device=auto"
        )
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if device.type != "cuda":
        log.warning("trainer.precision=%s needs a GPU; training in fp32 on CPU", precision)
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _optimizer(parameters: Iterator[nn.Parameter], config: TrainerParams) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(parameters, lr=config.lr, weight_decay=config.weight_decay)


def _lr_lambda(config: TrainerParams, steps_per_epoch: int) -> Any:
    total = max(1, config.epochs * steps_per_epoch)
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.schedule == "linear":
            return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))
        if config.schedule == "step":
            return config.gamma ** (step // (steps_per_epoch * config.step_size_epochs))
        return 1.0

    return factor


def _check_output_shape(
    model: nn.Module, row: torch.Tensor, target: Target, model_cfg: dict[str, Any]
) -> None:
    model.eval()
    with torch.inference_mode():
        shape = tuple(model(row).shape)
    model.train()
    if shape != (1, target.output_dim):
        raise ParamError(
            f"model {model_cfg.get('_target_')!r} returns shape {shape} for one row; a "
            f"{target.task} task needs {target.output_dim} output(s) per row: drop output_dim "
            "from the model config (the trainer sets it from the task)"
        )


def _loss(task: str) -> Any:
    if task == "binary":
        return lambda logits, y: nn.functional.binary_cross_entropy_with_logits(
            logits[:, 0], y, reduction="sum"
        )
    if task == "multiclass":
        return lambda logits, y: nn.functional.cross_entropy(logits, y, reduction="sum")
    return lambda logits, y: nn.functional.mse_loss(logits[:, 0], y, reduction="sum")


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


@contextlib.contextmanager
def _torch_determinism(threads: int) -> Iterator[None]:
    """Deterministic kernels, a fixed thread count and a private RNG, restored on exit."""
    saved_threads = torch.get_num_threads()
    saved_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        try:
            if threads > 0:
                torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(True, warn_only=True)
            yield
        finally:
            torch.set_num_threads(saved_threads)
            torch.use_deterministic_algorithms(saved_deterministic)


#: The component this module's command line runs.
COMPONENT = "components.train:run"


def main(argv: list[str] | None = None) -> None:
    """``python -m components.train --inputs JSON --params JSON --outputs JSON`` (or torchrun).

    Every rank runs it; rank 0 writes the outputs, prints what :func:`run` returns as JSON
    and, with ``--metrics PATH``, also writes it there (how a TrainJob hands its metrics
    back to the KFP task that launched it).
    """
    parser = argparse.ArgumentParser(prog="python -m components.train", description=main.__doc__)
    for name in ("inputs", "params", "outputs"):
        parser.add_argument(f"--{name}", required=True, help=f"the step's {name} as JSON")
    parser.add_argument("--metrics", help="file for rank 0 to write the returned metrics to")
    parser.add_argument(
        "--component", default=COMPONENT, choices=(COMPONENT,), help="the component to run"
    )
    args = parser.parse_args(argv)
    main_rank = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if main_rank else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = run(json.loads(args.inputs), json.loads(args.params), json.loads(args.outputs))
    except KfbatchError as error:
        logging.getLogger(__name__).error("%s", error)
        sys.exit(2)
    if main_rank and args.metrics:
        write_json(args.metrics, result or {})
    if result:
        sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
