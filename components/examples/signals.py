"""The signals example: generated noisy sine waves and their Welch power spectral densities.

``generate`` writes the demo dataset of ``configs/data/signals.yaml``, one record per
signal: an id, the sensor and its gain, a label, and a ``signal`` list column sampled at
``fs`` Hz (label 1 signals oscillate at 20 Hz, label 0 signals at 5 Hz). ``welch_psd`` is
the ``batch_map`` function of ``configs/experiment/signals.yaml``: per record,
``scipy.signal.welch`` over the signal.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import signal as sps

__all__ = ["generate", "welch_psd"]

FREQUENCIES_HZ = (5.0, 20.0)


def generate(rows: int, *, seed: int, samples: int = 512, fs: float = 100.0) -> pa.Table:
    """``rows`` signals of ``samples`` points: a sine at 5 or 20 Hz (by label) plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, rows)
    t = np.arange(samples) / fs
    phase = rng.uniform(0, 2 * np.pi, (rows, 1))
    freq = np.asarray(FREQUENCIES_HZ)[labels][:, None]
    waves = np.sin(2 * np.pi * freq * t[None, :] + phase) + rng.normal(0, 0.5, (rows, samples))
    values = pa.array(waves.astype(np.float32).ravel())
    offsets = pa.array(np.arange(0, rows * samples + 1, samples, dtype=np.int32))
    return pa.table(
        {
            "signal_id": [f"s{i:07d}" for i in range(rows)],
            "sensor": pa.array(np.array(["a", "b", "c"])[rng.integers(0, 3, rows)]),
            "gain": pa.array(np.round(rng.uniform(0.5, 2.0, rows), 3)),
            "signal": pa.ListArray.from_arrays(offsets, values),
            "label": pa.array(labels, pa.int64()),
        }
    )


def welch_psd(
    batch: pa.RecordBatch, *, column: str = "signal", fs: float = 100.0, nperseg: int = 128
) -> pa.RecordBatch:
    """Replace ``column`` by its Welch PSD (``psd``, a list per record) and the peak frequency.

    Records must have equal lengths (one 2-D array per batch keeps this vectorised).
    """
    lists = batch.column(column)
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise ValueError(f"column {column!r} holds signals of different lengths; pad them")
    n = int(lengths[0]) if len(lengths) else 0
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False).reshape(len(lengths), n)
    freqs, psd = sps.welch(values, fs=fs, nperseg=min(nperseg, max(n, 1)), axis=-1)
    peak = freqs[np.argmax(psd, axis=-1)] if len(lengths) else np.zeros(0)
    bins = psd.shape[-1] if len(lengths) else 0
    offsets = pa.array(np.arange(0, len(lengths) * bins + 1, max(bins, 1), dtype=np.int32))
    out = batch.drop_columns([column])
    out = out.append_column(
        "psd", pa.ListArray.from_arrays(offsets, pa.array(psd.astype(np.float32).ravel()))
    )
    return out.append_column("peak_hz", pa.array(peak, pa.float64()))
