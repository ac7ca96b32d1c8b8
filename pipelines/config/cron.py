"""Cron for KFP recurring runs: standard 5-field cron in config, KFP's 6-field form on the wire.

KFP's scheduler (the ScheduledWorkflow controller, and the API server's validation) parses cron
with robfig/cron v1's default parser: a leading *seconds* field, an optional day-of-week, and
``@`` descriptors. A standard ``0 2 * * *`` passed as-is is read there as "second 0 of minute 2
of every hour". :func:`to_kfp_cron` takes the standard 5-field form and prepends ``0`` seconds.

What is accepted: numbers, ``*``, ranges ``a-b``, steps ``*/n``, ``a-b/n`` and ``a/n`` (``a``
to the field's maximum, as robfig reads it), comma lists, three-letter month and day names
(``JAN``-``DEC``, ``SUN``-``SAT``, any case, also in ranges), and ``7`` for Sunday (rewritten
to ``0``, which robfig requires).

What is rejected, with one line saying why:

- any field count but 5, notably a 6-field expression, which already has a seconds field and
  would be shifted by one field (a 7-field Quartz expression likewise);
- ``@`` descriptors: ``@daily`` and friends have plain 5-field equivalents (the error names
  them), and ``@every`` fires at intervals counted from when the schedule was created, not at
  clock times;
- ``?``, ``L``, ``W``, ``#`` and ``CRON_TZ=`` prefixes (not standard cron, or not supported by
  robfig v1); full day names; empty list items; descending ranges (``22-2``); steps of 0 or
  wider than the field (``*/60`` for minutes);
- day-of-month and day-of-week both restricted: cron then runs when *either* matches
  (``0 0 13 * 5`` runs on every 13th and on every Friday), and crons disagree on whether
  ``*/2`` counts as restricted, so such expressions are refused rather than guessed at;
- days of month that no selected month has (``0 0 31 2 *`` would never run).

KFP fires crons in the time zone of its controller (``CRON_SCHEDULE_TIMEZONE``, UTC unless
the cluster sets it); a recurring run cannot carry its own, so :func:`recurring_cron` accepts
``schedule.timezone`` only when it is UTC.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pipelines.config.schema import ScheduleConfig
from pipelines.errors import ConfigError

__all__ = ["UTC_NAMES", "recurring_cron", "to_kfp_cron"]

#: Time-zone names that mean UTC; the only ones a KFP recurring run can honour.
UTC_NAMES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT"})

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_DAYS = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
#: Days in each month, leap years included (a cron for February 29 does run).
_MONTH_DAYS = dict(zip(range(1, 13), (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), strict=True))
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FORMAT = "minute hour day-of-month month day-of-week"
_NUMBER = re.compile(r"^[0-9]+$")
_NAME = re.compile(r"^[A-Za-z]+$")


@dataclass(frozen=True)
class _Field:
    """One cron field: its name, its range and the names it accepts."""

    name: str
    low: int
    high: int
    names: Mapping[str, int] = field(default_factory=dict)
    #: Largest number accepted in the text (day-of-week takes 7 for Sunday).
    alias_high: int | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 6, _DAYS, alias_high=7),
)


def to_kfp_cron(expr: str, *, key: str = "schedule.cron") -> str:
    """Convert a standard 5-field cron expression to KFP's 6-field form (seconds first).

    Args:
        expr: ``minute hour day-of-month month day-of-week``, e.g. ``0 2 * * *``.
        key: Config key named in errors.

    Returns:
        The expression with a leading ``0`` seconds field, e.g. ``0 0 2 * * *``; day-of-week
        ``7`` is rewritten as ``0``.

    Raises:
        ConfigError: The expression is invalid, ambiguous or never fires (see the module
            docstring for the rules).
    """

    def fail(expected: str) -> ConfigError:
        return ConfigError(key, expected, expr)

    text = expr.strip()
    if not text:
        raise fail(f"a 5-field cron expression ({_FORMAT})")
    if text.startswith("@"):
        raise fail(_macro_hint(text.split()[0].lower()))
    fields = text.split()
    if "=" in fields[0]:
        raise fail(
            "a 5-field cron expression without a time-zone prefix (set schedule.timezone instead)"
        )
    if len(fields) in (6, 7):
        raise fail(
            f"5 fields ({_FORMAT}), found {len(fields)}: kfbatch adds KFP's leading seconds "
            "field itself, so a 6- or 7-field expression would be read shifted by one field; "
            "drop the seconds (and year) field"
        )
    if len(fields) != 5:
        raise fail(f"5 fields ({_FORMAT}), found {len(fields)}")

    values = [
        _parse_field(field_text, spec, position, fail)
        for position, (field_text, spec) in enumerate(zip(fields, _FIELDS, strict=True), 1)
    ]
    minute, hour, dom, month, dow = fields
    if dom != "*" and dow != "*":
        raise fail(
            "day-of-month or day-of-week restricted, not both: cron runs when EITHER matches "
            f"(here: day {dom} of the month, and also every day-of-week {dow}); "
            "set one of them to '*'"
        )
    if dom != "*" and not any(day <= _MONTH_DAYS[m] for m in values[3] for day in values[2]):
        raise fail(f"a day of month that the selected months have (day {dom} of month {month})")
    if 7 in values[4]:  # Sunday as 7: robfig takes 0-6 only
        dow = ",".join(str(day) for day in sorted({d % 7 for d in values[4]}))
    return " ".join(("0", minute, hour, dom, month, dow))


def recurring_cron(schedule: ScheduleConfig) -> str:
    """The KFP cron for ``config.schedule``, checked for a KFP recurring run.

    Args:
        schedule: The ``schedule`` group of the composed config.

    Returns:
        The 6-field cron expression that KFP's scheduler expects.

    Raises:
        ConfigError: ``schedule.cron`` is missing or invalid, or ``schedule.timezone`` is not
            UTC (KFP takes the time zone from its controller, not from the recurring run).
    """
    if schedule.cron is None:
        raise ConfigError(
            "schedule.cron",
            "a 5-field cron expression such as '0 2 * * *' to schedule the pipeline "
            "(e.g. schedule=nightly or schedule.cron='0 2 * * *')",
            None,
        )
    cron = to_kfp_cron(schedule.cron)
    if schedule.timezone not in UTC_NAMES:
        raise ConfigError(
            "schedule.timezone",
            "UTC for a KFP recurring run (KFP fires crons in its scheduler's time zone, "
            "CRON_SCHEDULE_TIMEZONE, UTC by default, and a run cannot carry its own): "
            "write schedule.cron in UTC and set schedule.timezone=UTC",
            schedule.timezone,
        )
    return cron


def _macro_hint(macro: str) -> str:
    if macro in _MACROS:
        return f"a 5-field cron expression instead of {macro} (write '{_MACROS[macro]}')"
    if macro == "@every":
        return (
            "a 5-field cron expression instead of @every (KFP counts @every intervals from "
            "when the schedule was created, not from clock times; write e.g. '*/30 * * * *')"
        )
    return f"a 5-field cron expression ({_FORMAT}); {macro} is not supported"


def _parse_field(
    text: str, spec: _Field, position: int, fail: Callable[[str], ConfigError]
) -> frozenset[int]:
    """The values one field selects (as written: 7 stays 7); ``fail`` builds the error."""
    where = f"field {position} is '{text}'"
    top = spec.alias_high if spec.alias_high is not None else spec.high
    names = f" or names {'/'.join(n.upper() for n in spec.names)}" if spec.names else ""

    def value(token: str) -> int:
        if _NUMBER.match(token):
            number = int(token)
            if spec.low <= number <= top:
                return number
            raise fail(f"{spec.name} values in {spec.low}-{top} ({where})")
        if _NAME.match(token) and token.lower() in spec.names:
            return spec.names[token.lower()]
        raise fail(f"{spec.name} values as numbers {spec.low}-{top}{names} ({where})")

    selected: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            span = spec.high - spec.low
            if not _NUMBER.match(step_text) or not 1 <= int(step_text) <= span:
                raise fail(f"{spec.name} steps from 1 to {span} ({where})")
            step = int(step_text)
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = value(first), value(last)
            if low > high:
                raise fail(f"{spec.name} ranges that go upwards, such as 1-5 ({where})")
        elif base:
            low = value(base)
            high = spec.high if slash else low  # robfig reads 'a/n' as 'a-max/n'
        else:
            raise fail(f"{spec.name} lists without empty items ({where})")
        selected.update(range(low, high + 1, step))
    return frozenset(selected)
