"""Making a trained model fast to score: batch-size search and optional model optimization.

:func:`choose_batch_size` measures forward throughput on a sample of the data to score and
picks the fastest batch size whose working set fits a memory cap (``inference.batch_size:
auto``). :func:`optimize_model` applies dynamic int8 quantization, TorchScript and/or
``torch.compile`` (``inference.optimize``) and measures how far the optimized model's scores
move from the unoptimized model's on a sample, refusing a change beyond the tolerance.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from components.errors import ParamError
from components.model_artifact import scores_from_logits
from components.names import OPTIMIZATIONS

__all__ = [
    "AUTO_BATCH_SIZES",
    "activation_bytes_per_row",
    "choose_batch_size",
    "optimize_model",
]

log = logging.getLogger(__name__)

#: Batch sizes ``auto`` tries (PERF-NOTES: throughput is flat from ~1k to 16k rows on CPU).
AUTO_BATCH_SIZES = (256, 512, 1024, 2048, 4096, 8192, 16_384, 32_768)
#: What ``inference.optimize`` may list, applied in this order.


def activation_bytes_per_row(model: nn.Module, input_dim: int) -> int:
    """Bytes one row occupies while it passes through ``model``: the input plus the two
    widest consecutive activations (under ``inference_mode`` earlier ones are freed)."""
    widths: list[int] = []
    hooks = [
        module.register_forward_hook(lambda _m, _i, out: widths.append(out[0].numel()))
        for module in model.modules()
        if not list(module.children())
    ]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, input_dim))
    finally:
        for hook in hooks:
            hook.remove()
    pairs = [a + b for a, b in itertools.pairwise(widths)] or widths or [input_dim]
    return 4 * (input_dim + max(pairs))


def choose_batch_size(
    model: nn.Module,
    sample: torch.Tensor,
    *,
    memory_cap_bytes: float,
    candidates: Sequence[int] = AUTO_BATCH_SIZES,
    seconds_per_candidate: float = 0.06,
    rounds: int = 3,
) -> tuple[int, dict[int, float]]:
    """The batch size with the best measured forward throughput under ``memory_cap_bytes``.

    Args:
        model: The model as it will score (optimized, on its device).
        sample: Feature rows to time with (repeated when shorter than a candidate).
        memory_cap_bytes: Most bytes one batch's activations may take.
        candidates: Batch sizes to try.
        seconds_per_candidate: Timing budget per candidate, after one warm-up call.
        rounds: Rounds the budget is split into; a candidate's best round counts.

    Returns:
        The chosen batch size and the measured rows/s of each candidate tried.
    """
    per_row = activation_bytes_per_row(model, sample.shape[1])
    fitting = [b for b in candidates if b * per_row <= memory_cap_bytes]
    if not fitting:
        smallest = min(candidates)
        raise ParamError(
            f"inference.memory_cap_mb={memory_cap_bytes / 2**20:g} is too small for a batch of "
            f"{smallest} rows ({smallest * per_row / 2**20:.1f} MiB); raise it or set "
            "inference.batch_size explicitly"
        )
    batches = {}
    for size in fitting:
        reps = -(-size // sample.shape[0])
        batches[size] = (sample.repeat(reps, 1) if reps > 1 else sample)[:size].contiguous()
    rates: dict[int, float] = dict.fromkeys(fitting, 0.0)
    with torch.inference_mode():
        for batch in batches.values():
            model(batch)  # warm-up: first calls allocate and pick kernels
        # Interleaved rounds, best of each: a neighbour's burst of load slows one round of
        # every candidate rather than all rounds of one.
        for _ in range(rounds):
            for size, batch in batches.items():
                calls, start = 0, time.perf_counter()
                while calls < 2 or time.perf_counter() - start < seconds_per_candidate / rounds:
                    model(batch)
                    calls += 1
                if batch.is_cuda:
                    torch.cuda.synchronize(batch.device)
                rate = calls * size / (time.perf_counter() - start)
                rates[size] = max(rates[size], rate)
    best = max(rates, key=rates.__getitem__)
    log.info(
        "batch_size auto: %d (%s rows/s; tried %s)",
        best,
        f"{rates[best]:,.0f}",
        ", ".join(f"{b}: {r:,.0f}" for b, r in rates.items()),
    )
    return best, rates


def optimize_model(
    model: nn.Module,
    methods: Sequence[str],
    sample: torch.Tensor,
    *,
    task: str,
    tolerance: float,
) -> tuple[nn.Module, dict[str, Any]]:
    """Apply ``methods`` (from :data:`OPTIMIZATIONS`) and check the scores barely move.

    The optimized and the unoptimized model score ``sample``; the largest absolute score
    difference (and, for classifiers, the share of rows whose label stays the same at a 0.5
    threshold or argmax) is reported. A difference above ``tolerance`` is refused.

    Returns:
        The model to score with and metrics ``optimize_max_abs_diff``,
        ``optimize_label_agreement`` (classifiers) and ``optimize_sample_rows``.
    """
    unknown = [m for m in methods if m not in OPTIMIZATIONS]
    if unknown:
        raise ParamError(
            f"inference.optimize holds {unknown}; expected a list drawn from {list(OPTIMIZATIONS)}"
        )
    if not methods:
        return model, {}
    optimized = model
    if "quantize" in methods:
        if sample.is_cuda:
            raise ParamError(
                "inference.optimize=[quantize] runs on CPU only (dynamic int8 kernels); drop "
                "it for GPU scoring or score on CPU"
            )
        optimized = torch.ao.quantization.quantize_dynamic(optimized, {nn.Linear}, torch.qint8)
    if "torchscript" in methods:
        with torch.no_grad():
            optimized = torch.jit.freeze(torch.jit.trace(optimized, sample[:8]))
    if "compile" in methods:
        optimized = torch.compile(optimized, dynamic=True)
    with torch.inference_mode():
        before = scores_from_logits(task, model(sample)).float()
        after = scores_from_logits(task, optimized(sample)).float()
    diff = float((after - before).abs().max()) if sample.shape[0] else 0.0
    metrics: dict[str, Any] = {
        "optimize": ",".join(m for m in OPTIMIZATIONS if m in methods),
        "optimize_max_abs_diff": round(diff, 6),
        "optimize_sample_rows": int(sample.shape[0]),
    }
    if task != "regression" and sample.shape[0]:
        if task == "binary":
            same = (before >= 0.5) == (after >= 0.5)
        else:
            same = before.argmax(dim=1) == after.argmax(dim=1)
        metrics["optimize_label_agreement"] = round(float(same.float().mean()), 6)
    log.info("optimized with %s: %s", metrics["optimize"], metrics)
    if diff > tolerance:
        raise ParamError(
            f"inference.optimize={list(methods)} moves scores by up to {diff:.4g} on "
            f"{sample.shape[0]} sample rows, more than inference.tolerance={tolerance:g}; "
            "raise the tolerance or drop the optimization"
        )
    return optimized, metrics
