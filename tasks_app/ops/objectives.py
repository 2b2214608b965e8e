"""Latency objectives per task type (TASKHUB_LATENCY_OBJECTIVES), and whether a row of
tasks_app/ops/latency.py meets its type's.

The setting is a comma-separated list of `<task_type>=<measure>:p<percentile>:<seconds>`, at most one per
type, e.g. `volume_create=end_to_end:p95:30,noop=queue_wait:p99:5`: "the p95 of volume_create's end-to-end
time is at most 30 s". The measures are latency.py's (queue_wait, run_time, end_to_end), the percentiles
the ones it computes (50, 95, 99), and the seconds a positive number. An objective holds per node: a
type's row on each node is judged on its own, so the dashboard can say which node misses it.

taskhub/settings.py parses the setting with `parse`, so a malformed value stops every server process at
startup with the reason (ImproperlyConfigured); that the types exist is a system check (tasks_app/checks.py),
since the task types are known only once the apps are loaded. Nothing here touches the database or
Django: settings import this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks_app.ops.latency import Row

# The measures and percentiles of tasks_app/ops/latency.py, which takes them from here: this module is
# read by the settings, before the models (which latency.py needs) can be imported.
MEASURES = ("queue_wait", "run_time", "end_to_end")
PERCENTILES = (50, 95, 99)
SYNTAX = "<task_type>=<measure>:p<percentile>:<seconds>"


@dataclass(frozen=True)
class Objective:
    """The `percentile` of `measure` is at most `seconds`."""

    measure: str
    percentile: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.measure} p{self.percentile} ≤ {self.seconds:g} s"


@dataclass(frozen=True)
class Judgement:
    """A row against its type's objective: the value judged (seconds), and `met`: None when no run in the
    window had that step (nothing to judge)."""

    objective: Objective
    value: float | None
    met: bool | None


def parse(raw: str) -> dict[str, Objective]:
    """The objectives by task type. Raises ValueError naming the entry and what is wrong with it."""
    objectives: dict[str, Objective] = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue  # a trailing comma, or an empty setting
        task_type, sep, spec = (part.strip() for part in entry.partition("="))
        if not sep or not task_type:
            raise ValueError(f"{entry!r} is not {SYNTAX}, e.g. volume_create=end_to_end:p95:30")
        if task_type in objectives:
            raise ValueError(f"{task_type!r} has more than one objective: give each task type one")
        objectives[task_type] = _objective(entry, spec)
    return objectives


def _objective(entry: str, spec: str) -> Objective:
    parts = [p.strip() for p in spec.split(":")]
    if len(parts) != 3:
        raise ValueError(f"{entry!r} is not {SYNTAX}, e.g. volume_create=end_to_end:p95:30")
    measure, percentile, seconds = parts
    if measure not in MEASURES:
        raise ValueError(f"{entry!r}: the measure {measure!r} is none of {', '.join(MEASURES)}")
    choices = ", ".join(f"p{p}" for p in PERCENTILES)
    if percentile not in {f"p{p}" for p in PERCENTILES}:
        raise ValueError(f"{entry!r}: the percentile {percentile!r} is none of {choices}")
    try:
        limit = float(seconds)
    except ValueError:
        raise ValueError(f"{entry!r}: the seconds {seconds!r} are not a number") from None
    if not (math.isfinite(limit) and limit > 0):
        raise ValueError(f"{entry!r}: the seconds must be a number above 0, not {seconds!r}")
    return Objective(measure=measure, percentile=int(percentile[1:]), seconds=limit)


def judge(row: Row, objectives: dict[str, Objective]) -> Judgement | None:
    """The row's type's objective, judged on the row (None when its type has none). Met when the
    percentile is at most the seconds."""
    objective = objectives.get(row.task_type)
    if objective is None:
        return None
    value: float | None = getattr(getattr(row, objective.measure), f"p{objective.percentile}")
    return Judgement(objective=objective, value=value, met=None if value is None else value <= objective.seconds)
