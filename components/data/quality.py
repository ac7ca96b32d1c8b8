"""Data-quality checks and column profiles, computed while the data streams past.

Checks are declared in config (``quality.checks``), each on the raw (parsed and cast) rows
or on the prepared rows that ETL writes (``on: raw | prepared``), each ``warn`` or
``error``. Every check reduces to statistics that merge batch by batch (counts, nulls,
minimum/maximum, values outside a range or a set, moments), so memory stays bounded
whatever the input size; profiles' moments, quantiles, histograms and top values come from
:mod:`components.data.sketches` (exact, or with their error bound reported).
:func:`write_report` writes ``quality.json`` and ``quality.md``
(per-column profiles with histograms); :func:`raise_for_errors` fails the step with one
line naming the column, the check, the observed value and the threshold.

Check kinds (``check:``):

* ``type``: the column's Arrow type is ``type`` (e.g. ``float64``).
* ``not_null``: no nulls. ``null_fraction``: at most ``max`` of the rows are null.
* ``range``: every non-null value lies in [``min``, ``max``] (either may be null).
* ``allowed``: every non-null value is one of ``values``.
* ``unique``: no value appears twice (the id column; checked per shard by ETL).
* ``row_count``: the number of rows lies in [``min``, ``max``] (dataset-level, no column).
* ``drift``: against the reference feature spec (``quality.reference``): for a numeric
  column, ``|mean - reference mean| / reference std`` is at most ``max``; for a
  categorical column, the share of values outside the reference vocabulary is at most
  ``max``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.data.sketches import Distribution, HeavyHitters, Moments
from components.errors import DataError, ParamError
from components.io.files import write_json
from components.names import QUALITY_JSON, QUALITY_MARKDOWN

__all__ = [
    "CHECKS",
    "Check",
    "Profile",
    "evaluate",
    "parse_checks",
    "raise_for_errors",
    "reference_of",
    "write_report",
]

log = logging.getLogger(__name__)

CHECKS = ("type", "not_null", "null_fraction", "range", "allowed", "unique", "row_count", "drift")
LEVELS = ("warn", "error")
STAGES = ("raw", "prepared")
HISTOGRAM_BINS = 20
#: Quantiles and histograms are taken over 1 value in this many (moments over all of them).
DISTRIBUTION_STRIDE = 8
TOP_VALUES = 10
#: Quantiles every numeric profile reports, by name.
QUANTILES = {
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}


@dataclass(frozen=True)
class Check:
    """One declared check."""

    check: str
    column: str | None = None
    level: str = "error"
    on: str = "raw"
    min: float | None = None
    max: float | None = None
    values: tuple[Any, ...] = ()
    type: str | None = None

    @property
    def name(self) -> str:
        """``column.check`` (or ``check`` for dataset-level checks), ``@prepared`` if so."""
        base = f"{self.column}.{self.check}" if self.column else self.check
        return base if self.on == "raw" else f"{base}@{self.on}"


def parse_checks(declared: list[dict[str, Any]] | None) -> list[Check]:
    """Validate ``quality.checks`` entries into :class:`Check` objects."""
    checks = []
    for i, entry in enumerate(declared or ()):
        key = f"quality.checks[{i}]"
        entry = dict(entry)
        kind = entry.get("check")
        if kind not in CHECKS:
            raise ParamError(f"{key}.check={kind!r} is unknown; expected one of {CHECKS}")
        unknown = sorted(
            set(entry) - {"check", "column", "level", "on", "min", "max", "values", "type"}
        )
        if unknown:
            raise ParamError(f"{key} has unknown keys {unknown}")
        if entry.get("level", "error") not in LEVELS:
            raise ParamError(f"{key}.level={entry['level']!r} is invalid; expected warn or error")
        if entry.get("on", "raw") not in STAGES:
            raise ParamError(f"{key}.on={entry['on']!r} is invalid; expected raw or prepared")
        if kind == "row_count" and entry.get("column"):
            raise ParamError(f"{key}: row_count is a dataset check; remove column")
        if kind != "row_count" and not entry.get("column"):
            raise ParamError(f"{key}: check {kind!r} needs a column")
        if kind == "type" and not entry.get("type"):
            raise ParamError(f"{key}: check 'type' needs type (e.g. float64)")
        if kind == "allowed" and not entry.get("values"):
            raise ParamError(f"{key}: check 'allowed' needs values (a list)")
        if kind in ("null_fraction", "drift") and entry.get("max") is None:
            raise ParamError(f"{key}: check {kind!r} needs max")
        checks.append(
            Check(
                check=kind,
                column=entry.get("column"),
                level=entry.get("level", "error"),
                on=entry.get("on", "raw"),
                min=entry.get("min"),
                max=entry.get("max"),
                values=tuple(entry.get("values") or ()),
                type=entry.get("type"),
            )
        )
    return checks


@dataclass
class _ColumnStats:
    """Mergeable statistics of one column."""

    type: str
    count: int = 0
    nulls: int = 0
    n: int = 0
    minimum: float | None = None
    maximum: float | None = None
    moments: Moments = field(default_factory=Moments)
    distribution: Distribution = field(default_factory=Distribution)
    values: HeavyHitters = field(default_factory=HeavyHitters)
    violations: dict[str, int] = field(default_factory=dict)
    examples: dict[str, Any] = field(default_factory=dict)


class Profile:
    """Per-column statistics of a stream of batches, plus the counts the checks need."""

    def __init__(
        self,
        checks: list[Check],
        reference: dict[str, Any] | None = None,
        *,
        id_column: str | None = None,
    ) -> None:
        self.rows = 0
        self.columns: dict[str, _ColumnStats] = {}
        self._checks = checks
        self._reference = reference or {}
        # Ids are unique by contract (ETL counts repeats itself): their top values say
        # nothing, and counting them would hash every id of every batch.
        self._id_column = id_column

    def update(self, batch: pa.RecordBatch) -> None:
        """Add ``batch`` to the statistics."""
        self.rows += batch.num_rows
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            stats = self.columns.get(name)
            if stats is None:
                stats = self.columns[name] = _ColumnStats(str(column.type))
            stats.count += len(column)
            stats.nulls += column.null_count
            kind = column.type
            if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
                _numeric(stats, column)
            elif pa.types.is_timestamp(kind) or pa.types.is_date(kind):
                _bounds(stats, pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64()))
            elif (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and (
                name != self._id_column
            ):
                _text(stats, column)
        for check in self._checks:
            if check.column is None or check.check not in ("range", "allowed", "drift"):
                continue
            if check.column not in batch.schema.names:
                continue
            _violations(
                self.columns[check.column], check, batch.column(check.column), self._reference
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready profile: rows, and per column counts, nulls, range, mean, histogram."""
        return {
            "rows": self.rows,
            "columns": {name: _column_profile(stats) for name, stats in self.columns.items()},
        }


def _numeric(stats: _ColumnStats, column: pa.Array) -> None:
    """Exact count, min and max; moments and the distribution of every finite value."""
    extremes = pc.min_max(column)
    low, high = extremes["min"].as_py(), extremes["max"].as_py()
    if low is None:
        return
    low, high = float(low), float(high)
    stats.n += len(column) - column.null_count
    stats.minimum = low if stats.minimum is None else min(stats.minimum, low)
    stats.maximum = high if stats.maximum is None else max(stats.maximum, high)
    if column.null_count:
        column = column.drop_null()
    if not pa.types.is_float64(column.type):
        column = pc.cast(column, pa.float64())
    finite = pc.is_finite(column)
    if not pc.all(finite).as_py():
        column = column.filter(finite)
    stats.moments.add(column)
    stats.distribution.add(column.to_numpy(zero_copy_only=False)[::DISTRIBUTION_STRIDE])


def _bounds(stats: _ColumnStats, column: pa.Array) -> None:
    extremes = pc.min_max(column)
    low, high = extremes["min"].as_py(), extremes["max"].as_py()
    if low is None:
        return
    stats.minimum = low if stats.minimum is None else min(stats.minimum, low)
    stats.maximum = high if stats.maximum is None else max(stats.maximum, high)


def _text(stats: _ColumnStats, column: pa.Array) -> None:
    stats.values.add(column)


def _violations(
    stats: _ColumnStats, check: Check, column: pa.Array, reference: dict[str, Any]
) -> None:
    valid = column.drop_null()
    if check.check == "range":
        numbers = pc.cast(valid, pa.float64()) if not pa.types.is_floating(valid.type) else valid
        bad = pa.array(np.zeros(len(numbers), dtype=bool))
        if check.min is not None:
            bad = pc.or_(bad, pc.less(numbers, check.min))
        if check.max is not None:
            bad = pc.or_(bad, pc.greater(numbers, check.max))
    elif check.check == "allowed":
        allowed = pa.array(list(check.values)).cast(valid.type)
        bad = pc.invert(pc.is_in(valid, value_set=allowed))
    else:  # drift of a categorical column: values outside the reference vocabulary
        vocabulary = reference.get("vocabularies", {}).get(check.column)
        if vocabulary is None:
            return
        text = valid if pa.types.is_string(valid.type) else pc.cast(valid, pa.string())
        bad = pc.invert(pc.is_in(text, value_set=pa.array(vocabulary, pa.string())))
    count = pc.sum(bad).as_py() or 0
    stats.violations[check.name] = stats.violations.get(check.name, 0) + count
    if count and check.name not in stats.examples:
        stats.examples[check.name] = valid.filter(bad)[0].as_py()


def _column_profile(stats: _ColumnStats) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "type": stats.type,
        "count": stats.count,
        "nulls": stats.nulls,
        "null_fraction": stats.nulls / stats.count if stats.count else 0.0,
    }
    if stats.minimum is not None:
        profile["min"], profile["max"] = stats.minimum, stats.maximum
    moments, distribution = stats.moments, stats.distribution
    if moments.n:
        profile["mean"], profile["std"] = moments.mean, moments.std
        quantiles = distribution.quantiles(list(QUANTILES.values()))
        profile["quantiles"] = dict(zip(QUANTILES, quantiles, strict=True))
        low, high = distribution.quantiles([0.0, 1.0])  # the finite extremes, exactly
        edges, counts = distribution.histogram(low, high, HISTOGRAM_BINS)
        profile["histogram"] = {"edges": edges, "counts": counts}
        profile["exact"], profile["rank_error"] = distribution.exact, distribution.rank_error
        profile["sampled_every"] = DISTRIBUTION_STRIDE
    if stats.values.counts:
        profile["distinct"] = len(stats.values.counts) if stats.values.distinct_exact else None
        profile["top"] = stats.values.top(TOP_VALUES)
        profile["top_error"] = stats.values.error
    return profile


def reference_of(spec: dict[str, Any]) -> dict[str, Any]:
    """What drift checks compare against, from a feature spec's ``to_dict()``."""
    return {
        "version": spec.get("version"),
        "numeric": {c["name"]: (c["mean"], c["std"]) for c in spec.get("numeric", [])},
        "vocabularies": {c["name"]: c["vocabulary"] for c in spec.get("categorical", [])},
    }


def evaluate(
    checks: list[Check],
    profiles: dict[str, Profile],
    *,
    duplicates: dict[str, int] | None = None,
    reference: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every check against the profiles (``raw``, ``prepared``); one result each."""
    results = []
    for check in checks:
        profile = profiles[check.on]
        observed, threshold, passed, detail = _outcome(
            check, profile, duplicates or {}, reference or {}
        )
        status = "pass" if passed else ("fail" if check.level == "error" else "warn")
        subject = f"column {check.column!r}" if check.column else "dataset"
        message = (
            f"quality check {check.check} on {subject} ({check.on} rows): observed "
            f"{_fmt(observed)}, expected {threshold}{detail}"
        )
        results.append(
            {
                "name": check.name,
                "check": check.check,
                "column": check.column,
                "on": check.on,
                "level": check.level,
                "status": status,
                "observed": observed,
                "threshold": threshold,
                "message": message,
            }
        )
        if status != "pass":
            log.warning("%s: %s", status, message)
    return results


def _outcome(
    check: Check, profile: Profile, duplicates: dict[str, int], reference: dict[str, Any]
) -> tuple[Any, str, bool, str]:
    """(observed value, threshold text, passed, extra detail) of one check."""
    if check.check == "row_count":
        low = check.min if check.min is not None else 0
        high = check.max if check.max is not None else math.inf
        return profile.rows, f"rows in [{low}, {high}]", low <= profile.rows <= high, ""
    stats = profile.columns.get(str(check.column))
    if stats is None:
        return (
            "missing",
            f"a column named {check.column!r}",
            False,
            f" (columns: {sorted(profile.columns)})",
        )
    if check.check == "type":
        return stats.type, f"type {check.type}", stats.type == check.type, ""
    if check.check == "not_null":
        return stats.nulls, "0 nulls", stats.nulls == 0, ""
    if check.check == "null_fraction":
        fraction = stats.nulls / stats.count if stats.count else 0.0
        return round(fraction, 6), f"null fraction <= {check.max}", fraction <= check.max, ""
    if check.check == "unique":
        repeated = duplicates.get(str(check.column), 0)
        return repeated, "0 repeated values", repeated == 0, ""
    bad = stats.violations.get(check.name, 0)
    example = stats.examples.get(check.name)
    detail = f" (e.g. {example!r})" if example is not None else ""
    if check.check == "range":
        bounds = f"[{check.min}, {check.max}]"
        observed = f"{bad} values outside, range [{_fmt(stats.minimum)}, {_fmt(stats.maximum)}]"
        return observed, f"every value in {bounds}", bad == 0, detail
    if check.check == "allowed":
        return f"{bad} other values", f"values in {list(check.values)}", bad == 0, detail
    # drift
    numeric = reference.get("numeric", {}).get(check.column)
    if numeric is not None and stats.moments.n:
        mean, std = numeric
        shift = abs(stats.moments.mean - mean) / (std or 1.0)
        return round(shift, 6), f"mean shift <= {check.max} reference std", shift <= check.max, ""
    if check.column in reference.get("vocabularies", {}):
        share = bad / max(stats.count - stats.nulls, 1)
        return (
            round(share, 6),
            f"share outside the reference vocabulary <= {check.max}",
            share <= check.max,
            detail,
        )
    return "no reference", "the column in the reference feature spec", False, ""


def raise_for_errors(results: list[dict[str, Any]]) -> None:
    """Raise DataError naming every failed ``error`` check (the first in full)."""
    failed = [r for r in results if r["status"] == "fail"]
    if failed:
        others = f" (and {len(failed) - 1} more failed checks)" if len(failed) > 1 else ""
        raise DataError(
            f"{failed[0]['message']}{others}; fix the data or relax the check in quality.checks "
            "(see quality.md)"
        )


def write_report(directory: str, report: dict[str, Any]) -> None:
    """Write ``quality.json`` and the Markdown rendering ``quality.md`` into ``directory``."""
    os.makedirs(directory, exist_ok=True)
    write_json(os.path.join(directory, QUALITY_JSON), _finite(report))
    path = os.path.join(directory, QUALITY_MARKDOWN)
    with open(f"{path}.tmp", "w", encoding="utf-8") as f:
        f.write(markdown(report))
    os.replace(f"{path}.tmp", path)


def markdown(report: dict[str, Any]) -> str:
    """A Markdown summary: check results, then one profile table per stage."""
    lines = ["# Data quality", ""]
    checks = report.get("checks", [])
    failed = sum(r["status"] == "fail" for r in checks)
    warned = sum(r["status"] == "warn" for r in checks)
    lines += [
        f"{len(checks)} checks: {len(checks) - failed - warned} passed, {warned} warnings, "
        f"{failed} failed. Rows read {report.get('rows_in', '?')}, written "
        f"{report.get('rows_out', '?')}, rejected {report.get('rows_rejected', '?')}.",
        "",
    ]
    for column, rows in sorted(report.get("division_by_zero", {}).items()):
        lines += [f"Derived column {column}: {rows} rows divided by zero (null).", ""]
    if checks:
        lines += [
            "| check | level | status | observed | expected |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in checks:
            lines.append(
                f"| {r['name']} | {r['level']} | {r['status']} | {_fmt(r['observed'])} | "
                f"{r['threshold']} |"
            )
        lines.append("")
    for stage, profile in report.get("profiles", {}).items():
        lines += [
            f"## Profile of the {stage} rows ({profile['rows']} rows)",
            "",
            "| column | type | nulls | min | max | mean | distribution |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, p in profile["columns"].items():
            lines.append(
                f"| {name} | {p['type']} | {p['nulls']} | {_fmt(p.get('min'))} | "
                f"{_fmt(p.get('max'))} | {_fmt(p.get('mean'))} | {_distribution(p)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _distribution(profile: dict[str, Any]) -> str:
    histogram = profile.get("histogram")
    if histogram:
        counts = histogram["counts"]
        top = max(counts) or 1
        bars = "▁▂▃▄▅▆▇█"
        return "".join(bars[min(int(c / top * 8), 7)] if c else " " for c in counts)
    if profile.get("top"):
        return ", ".join(f"{v} ({c})" for v, c in profile["top"][:5])
    return ""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _finite(value: Any) -> Any:
    """Replace non-finite floats (JSON cannot hold them) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
