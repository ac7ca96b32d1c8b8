"""One rank's training loop: the lifecycle ``setup -> load_checkpoint -> train -> cleanup``.

Every rank holds identical replicas (DDP) or shards (FSDP) of the model; rank 0 writes the
checkpoints and the model artifact. A checkpoint holds the model, optimizer, scheduler,
grad scaler, every rank's RNG states and the sampler position (:class:`ResumeState`), so a
resumed run ends with bitwise the same weights as one never interrupted (on CPU).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from components.data.features import FeatureSpec
from components.data.labels import Target
from components.errors import ParamError
from components.evaluation import metrics as task_metrics
from components.model_artifact import save_model
from components.models import build_model
from components.params import TrainerParams
from components.training.checkpoint import CheckpointStore
from components.training.distributed import (
    World,
    all_gather,
    all_reduce_sum,
    barrier,
    process_group,
)
from components.training.optim import (
    amp_dtype,
    autocast,
    lr_factor,
    make_optimizer,
    pick_device,
    summed_loss,
)
from components.training.stream import ShardStream

__all__ = ["ResumeState", "Trainer"]

log = logging.getLogger(__name__)

#: Validation rows per forward pass.
EVAL_BATCH_ROWS = 65_536
_FULL = StateDictOptions(full_state_dict=True)
_FULL_ON_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)


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
        world: World,
        checkpoints: CheckpointStore | None,
    ) -> None:
        self.model_cfg, self.config, self.spec, self.target = model_cfg, config, spec, target
        self.world, self.checkpoints = world, checkpoints
        self._group = contextlib.ExitStack()
        self.state = ResumeState()
        self.train_seconds = 0.0
        self.checkpoint_seconds = 0.0
        self.samples = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ lifecycle

    def setup(self, train: ShardStream, validation: tuple[np.ndarray, np.ndarray]) -> None:
        """Pick the device, join the ranks' process group, pick the precision, seed, and build
        the model, optimizer and schedule."""
        config = self.config
        self.device = pick_device(config.device, self.world.local_rank)
        self._group.enter_context(process_group(self.world, self.device))
        self.amp_dtype = amp_dtype(config.precision, self.device)
        torch.manual_seed(config.seed)
        self.train_stream = train
        self.val_x = torch.from_numpy(validation[0])
        self.val_y = torch.from_numpy(validation[1])
        module = build_model(self.model_cfg, len(self.spec.feature_names), self.target.output_dim)
        _check_output_shape(module, self.val_x[:1], self.target, self.model_cfg)
        self.model = self._wrap(module.to(self.device))
        self.optimizer = make_optimizer(self.model.parameters(), config)
        self.steps_per_epoch = math.ceil(train.batches_per_epoch / config.accumulate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(config, self.steps_per_epoch)
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.loss_fn = summed_loss(self.target.task)
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
        if len(rng) == self.world.size:
            torch.set_rng_state(rng[self.world.rank]["cpu"])
            if self.device.type == "cuda" and rng[self.world.rank].get("cuda") is not None:
                torch.cuda.set_rng_state(rng[self.world.rank]["cuda"], self.device)
        else:
            log.warning(
                "checkpoint was written by %d ranks, this run has %d: RNG states are not "
                "restored, so dropout draws differ from an uninterrupted run",
                len(rng),
                self.world.size,
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
        rngs = all_gather(rng, self.world)
        model_state = self._model_state()
        optimizer_state = self._optimizer_state()
        if self.world.main:
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
        barrier(self.world)
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
            train_loss = all_reduce_sum(
                torch.tensor(
                    [self.state.epoch_loss, self.state.epoch_rows],
                    dtype=torch.float64,
                    device=self.device,  # nccl reduces CUDA tensors only
                ),
                self.world,
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
        """Leave the process group :meth:`setup` joined (safe to call after a failed or no
        setup; the checkpoints stay until the step clears them)."""
        self._group.close()

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
        if not self.world.main:
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
        if self.world.size == 1:
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
        scale = self.world.size / (global_rows * self.config.accumulate)
        with no_sync:  # forward and backward: DDP skips the all-reduce between boundaries
            with autocast(self.device, self.amp_dtype):
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
        with torch.inference_mode(), autocast(self.device, self.amp_dtype):
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

    # One path for every wrapping: torch's distributed state-dict API gives full, unsharded
    # CPU state for a plain module, a DDP replica and FSDP shards alike (keyed by the plain
    # module's names), so checkpoints resume across world sizes and strategies.

    def _model_state(self) -> dict[str, torch.Tensor]:
        state = get_model_state_dict(self.model, options=_FULL_ON_CPU)
        return {k: v.detach().clone() for k, v in state.items()}

    def _set_model_state(self, state: dict[str, torch.Tensor]) -> None:
        set_model_state_dict(self.model, state, options=_FULL)

    def _optimizer_state(self) -> dict[str, Any]:
        return _cloned(get_optimizer_state_dict(self.model, self.optimizer, options=_FULL_ON_CPU))

    def _set_optimizer_state(self, state: dict[str, Any]) -> None:
        set_optimizer_state_dict(self.model, self.optimizer, state, options=_FULL)


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


def _cloned(value: Any) -> Any:
    """``value`` with every tensor copied (state dicts alias live parameters on CPU)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _cloned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cloned(v) for v in value]
    return value
