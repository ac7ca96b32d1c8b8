"""Hyperparameter trials, drawn once when the DAG is built.

``tune.space`` maps dotted keys (``trainer.lr``, ``model.hidden``) to values in Hydra's sweep
override grammar, parsed with Hydra's own override parser:

- ``choice(a, b, ...)``: one of the listed values (lists allowed: ``choice([64],[128,64])``);
- ``range(start, stop[, step])``: one of the numbers of a Python-style range;
- ``interval(low, high)``: uniform in [low, high] (floats, as in Hydra);
  ``tag(log, interval(low, high))`` samples on a log scale, ``int(interval(1, 8))`` integers;
- a plain value: fixed for every trial.

Random search draws ``n_trials`` trials from ``tune.seed`` (the top-level seed when null), so
the same config always yields the same trials and the same DAG. Grid search enumerates every
combination of choices and ranges in key order, at most ``n_trials`` of them; an interval
cannot be enumerated and is refused.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException

from pipelines.errors import ConfigError

__all__ = ["parse_space", "trials"]

_GROUPS = ("model", "trainer")


def parse_space(space: Mapping[str, str]) -> dict[str, Any]:
    """Parse each entry of ``tune.space`` into a Hydra sweep (or a plain value).

    Raises:
        ConfigError: a key outside ``model.*``/``trainer.*`` or an expression Hydra's
            grammar rejects.
    """
    parser = OverridesParser.create()
    parsed: dict[str, Any] = {}
    for key in sorted(space):
        if key.partition(".")[0] not in _GROUPS or "." not in key:
            raise ConfigError(
                f"tune.space.{key}", "a dotted model.* or trainer.* key such as trainer.lr", key
            )
        expression = space[key]
        try:
            parsed[key] = parser.parse_override(f"{key}={expression}").value()
        except HydraException as error:
            raise ConfigError(
                f"tune.space.{key}",
                "Hydra sweep grammar such as interval(1e-4,1e-2), choice(1,2) or range(1,5) "
                f"({' '.join(str(error).split())[:160]})",
                expression,
            ) from None
    return parsed


def trials(
    space: Mapping[str, str], *, search: str, n_trials: int, seed: int
) -> list[dict[str, Any]]:
    """The trials' overrides (dotted key -> value), in trial order.

    Raises:
        ConfigError: see :func:`parse_space`; an interval in a grid search; an empty space.
    """
    parsed = parse_space(space)
    if not parsed:
        raise ConfigError("tune.space", "at least one key to search, e.g. trainer.lr", {})
    if search == "grid":
        axes = [_grid_values(key, sweep) for key, sweep in parsed.items()]
        combos = itertools.islice(itertools.product(*axes), n_trials)
        return [dict(zip(parsed, combo, strict=True)) for combo in combos]
    rng = random.Random(seed)
    return [{key: _sample(sweep, rng) for key, sweep in parsed.items()} for _ in range(n_trials)]


def _grid_values(key: str, sweep: Any) -> list[Any]:
    if isinstance(sweep, ChoiceSweep):
        return list(sweep.list)
    if isinstance(sweep, RangeSweep):
        return _range_values(sweep)
    if isinstance(sweep, IntervalSweep):
        raise ConfigError(
            f"tune.space.{key}",
            "choice(...) or range(...) for tune.search=grid (an interval cannot be enumerated)",
            f"interval({sweep.start}, {sweep.end})",
        )
    return [sweep]


def _range_values(sweep: RangeSweep) -> list[Any]:
    values, value = [], sweep.start
    step = sweep.step or 1
    while (step > 0 and value < sweep.stop) or (step < 0 and value > sweep.stop):
        values.append(value)
        value += step
    return values


def _sample(sweep: Any, rng: random.Random) -> Any:
    if isinstance(sweep, ChoiceSweep):
        return sweep.list[rng.randrange(len(sweep.list))]
    if isinstance(sweep, RangeSweep):
        values = _range_values(sweep)
        return values[rng.randrange(len(values))]
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if "log" in (sweep.tags or set()):
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        if isinstance(low, int) and isinstance(high, int):
            return round(value)
        return float(f"{value:.6g}")  # readable in the DAG and the results table
    return sweep
