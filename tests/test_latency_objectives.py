"""TASKHUB_LATENCY_OBJECTIVES (tasks_app/ops/objectives.py): its syntax, the errors that stop a process at
startup, and the system check on the task types it names. Judging rows: tests/test_stats.py and
tests/test_dashboard.py."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import fields
from typing import Any

import pytest

from tasks_app import checks
from tasks_app.ops import latency, objectives
from tasks_app.ops.objectives import Objective, parse
from tests.conftest import MANAGE, ROOT


def test_parses_one_objective_per_type() -> None:
    assert parse(" volume_create = end_to_end:p95:30 , noop=queue_wait:p99:0.5,") == {
        "volume_create": Objective(measure="end_to_end", percentile=95, seconds=30.0),
        "noop": Objective(measure="queue_wait", percentile=99, seconds=0.5),
    }
    assert parse("") == {}
    assert str(parse("noop=run_time:p50:2.5")["noop"]) == "run_time p50 ≤ 2.5 s"


def test_the_measures_and_percentiles_are_latency_s() -> None:
    # objectives.py cannot import latency.py (settings import it, before the models exist): kept equal here.
    assert objectives.PERCENTILES == latency.PERCENTILES
    assert tuple(f.name for f in fields(latency.Row))[3:] == objectives.MEASURES


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("noop", "'noop' is not <task_type>=<measure>:p<percentile>:<seconds>"),
        ("=end_to_end:p95:30", "is not <task_type>="),
        ("noop=end_to_end:p95", "'noop=end_to_end:p95' is not <task_type>="),
        ("noop=end_to_end:p95:30:1", "is not <task_type>="),
        ("noop=latency:p95:30", "the measure 'latency' is none of queue_wait, run_time, end_to_end"),
        ("noop=end_to_end:p90:30", "the percentile 'p90' is none of p50, p95, p99"),
        ("noop=end_to_end:95:30", "the percentile '95' is none of"),
        ("noop=end_to_end:p95:soon", "the seconds 'soon' are not a number"),
        ("noop=end_to_end:p95:0", "the seconds must be a number above 0, not '0'"),
        ("noop=end_to_end:p95:-3", "above 0"),
        ("noop=end_to_end:p95:nan", "above 0"),
        ("noop=end_to_end:p95:inf", "above 0"),
        ("noop=end_to_end:p95:30,noop=queue_wait:p50:1", "'noop' has more than one objective"),
    ],
)
def test_a_malformed_value_says_what_is_wrong(raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse(raw)


def _check(value: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKHUB_LATENCY_OBJECTIVES": value}
    return subprocess.run([*MANAGE, "check"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_malformed_value_stops_the_process_at_startup() -> None:
    proc = _check("volume_create=end_to_end:p90:30")
    assert proc.returncode != 0
    assert "ImproperlyConfigured: TASKHUB_LATENCY_OBJECTIVES: 'volume_create=end_to_end:p90:30': the percentile" in (
        proc.stderr
    )


def test_an_unknown_task_type_fails_the_system_check() -> None:
    proc = _check("volume_create=end_to_end:p95:30,volum_create=queue_wait:p50:1")
    assert proc.returncode != 0
    assert "taskhub.E002" in proc.stderr and "'volum_create', not an executable task type" in proc.stderr
    good = _check("volume_create=end_to_end:p95:30,noop=queue_wait:p99:5")
    assert good.returncode == 0, good.stderr
    assert "System check identified no issues" in good.stdout


def test_the_check_passes_known_types_and_names_unknown_ones(settings: Any) -> None:
    settings.TASKHUB_LATENCY_OBJECTIVES = parse("noop=end_to_end:p95:30")
    assert checks.latency_objectives_name_task_types(None) == []
    settings.TASKHUB_LATENCY_OBJECTIVES = parse("noop=end_to_end:p95:30,nope=run_time:p50:1,also=run_time:p50:1")
    [error] = checks.latency_objectives_name_task_types(None)
    assert error.id == "taskhub.E002" and error.msg.startswith("TASKHUB_LATENCY_OBJECTIVES names 'also', 'nope',")
    assert "noop" in (error.hint or "")
