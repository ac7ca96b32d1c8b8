"""The building blocks a Trainer is made of: device, precision, optimizer, schedule, loss,
and deterministic kernels."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from components.errors import ParamError
from components.params import TrainerParams

__all__ = [
    "amp_dtype",
    "autocast",
    "deterministic",
    "lr_factor",
    "make_optimizer",
    "pick_device",
    "summed_loss",
]

log = logging.getLogger(__name__)

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pick_device(choice: str, local_rank: int) -> torch.device:
    """The device ``trainer.device`` asks for; CUDA devices are shared round-robin by rank.

    Raises:
        ParamError: CUDA asked for but none is visible.
    """
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


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``trainer.precision`` (None: fp32; mixed precision needs CUDA)."""
    if precision == "fp32":
        return None
    if device.type != "cuda":
        log.warning("trainer.precision=%s needs a GPU; training in fp32 on CPU", precision)
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """Autocast to ``dtype``, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_optimizer(
    parameters: Iterator[nn.Parameter], config: TrainerParams
) -> torch.optim.Optimizer:
    """``trainer.optimizer`` with its learning rate, weight decay and momentum."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(parameters, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(config: TrainerParams, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate multiplier per optimizer step: linear warmup, then
    ``trainer.schedule`` (constant, cosine, linear or step)."""
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


def summed_loss(task: str) -> Loss:
    """The task's loss summed over rows (the trainer scales it to the global batch mean)."""
    if task == "binary":
        return lambda logits, y: nn.functional.binary_cross_entropy_with_logits(
            logits[:, 0], y, reduction="sum"
        )
    if task == "multiclass":
        return lambda logits, y: nn.functional.cross_entropy(logits, y, reduction="sum")
    return lambda logits, y: nn.functional.mse_loss(logits[:, 0], y, reduction="sum")


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Deterministic kernels, a fixed thread count (0: leave it) and a private RNG, all
    restored on exit."""
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
