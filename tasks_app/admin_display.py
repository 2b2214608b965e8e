"""How the task admin page shows an executed task's placement, constraints and runs: HTML built with
format_html only, since every value in them may come from a client (task data is hostile input)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils.html import format_html, format_html_join

from tasks_app.tasks.timings import RunTiming, total_time


def _when(epoch: Any) -> str:
    if isinstance(epoch, int | float) and not isinstance(epoch, bool):
        try:
            return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (OverflowError, OSError, ValueError):
            pass
    return str(epoch)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _pairs(mapping: Any, sep: str) -> str:
    """{"disk": "ssd"} as disk=ssd, escaped."""
    items = sorted((str(k), str(v)) for k, v in _dict(mapping).items())
    return format_html_join(", ", "<code>{}" + sep + "{}</code>", items) if items else "none"


def constraints_html(constraints: Any) -> str:
    c = _dict(constraints)
    if not c:
        return "none"
    return format_html("labels: {}<br>capacity: {}", _pairs(c.get("labels"), "="), _pairs(c.get("capacity"), ": "))


def _candidate_row(entry: Any) -> tuple[Any, ...]:
    e = _dict(entry)
    if "passed_over" in e:
        return (e.get("node", ""), "", "", "", format_html("passed over: {}", e["passed_over"]))
    online = "" if "online" not in e else ("online" if e["online"] is True else "offline")
    share = e.get("free_share", "")
    return (e.get("node", ""), online, e.get("unfinished", ""), share, "may take it")


def placement_html(placement: Any) -> str:
    """GlobalTask.placement (tasks_app/fleet/placement.py) as a short summary, a candidates table and
    the moves. Any shape is shown (an older or hand-written record), never trusted to be well formed."""
    p = _dict(placement)
    if not p:
        return "none recorded (a tracked task, or one placed before placement was recorded)"
    head = format_html(
        "rule: <strong>{}</strong>; node: <strong>{}</strong>; at {}",
        p.get("rule", "?"), p.get("node", "") or "none", _when(p.get("at")),
    )  # fmt: skip
    parts = [head]
    if p.get("outcome"):
        parts.append(format_html("<br>outcome: <strong>{}</strong>", p["outcome"]))
    if p.get("order_key"):
        parts.append(format_html("<br>ordering key: <code>{}</code>", p["order_key"]))
    key_node = _dict(p.get("order_key_node"))
    if key_node:
        parts.append(
            format_html(
                "<br>its ordering key's node {} was passed over: {}",
                key_node.get("node", ""),
                key_node.get("passed_over", ""),
            )
        )
    if p.get("reassigned_from"):
        parts.append(format_html("<br>reassigned from {} (it went offline)", p["reassigned_from"]))
    candidates = as_list(p.get("candidates"))
    if candidates:
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", map(_candidate_row, candidates)
        )
        parts.append(
            format_html(
                '<table class="taskhub-candidates"><caption>candidates</caption><thead><tr><th>node</th>'
                "<th>online</th><th>unfinished</th><th>free share</th><th>verdict</th></tr></thead>"
                "<tbody>{}</tbody></table>",
                rows,
            )
        )
    moves = [_dict(m) for m in as_list(p.get("moves"))]
    if moves:
        items = ((m.get("from", ""), m.get("to", ""), _when(m.get("at")), m.get("by", "")) for m in moves)
        parts.append(format_html("moves:<ul>{}</ul>", format_html_join("", "<li>{} &rarr; {} at {} ({})</li>", items)))
    return format_html_join("", "{}", ((part,) for part in parts))


def _took(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if abs(seconds) < 60:
        return f"{seconds:.3f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {rest:.1f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min {rest:.0f} s"


def _at(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value is not None else "-"


def _run_row(number: int, run: RunTiming) -> tuple[Any, ...]:
    return (
        number,
        run.run_id or "(none)",
        format_html("{} at {}<br><small>{}</small>", run.began, _at(run.began_at), run.began_by),
        " → ".join(run.statuses),
        run.outcome,
        _took(run.queue_wait),
        _took(run.received_to_in_progress),
        _took(run.run_time),
        _took(run.end_to_end),
    )


def runs_html(runs: list[RunTiming]) -> str:
    """A task's runs (attempts) with the time each step took (tasks_app/tasks/timings.py)."""
    if not runs:
        return "no history"
    rows = format_html_join(
        "",
        '<tr class="taskhub-run"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>'
        '<td class="queue-wait">{}</td><td>{}</td><td class="run-time">{}</td><td class="end-to-end">{}</td></tr>',
        (_run_row(i, run) for i, run in enumerate(runs, 1)),
    )
    return format_html(
        '<table class="taskhub-runs"><thead><tr><th>#</th><th>run</th><th>began</th><th>statuses</th>'
        "<th>outcome</th><th>queue wait (to received)</th><th>received &rarr; in_progress</th>"
        "<th>run time (in_progress &rarr; final)</th><th>end to end</th></tr></thead><tbody>{}</tbody></table>"
        '<p class="taskhub-total">all runs, first start to final: {}</p>',
        rows,
        _took(total_time(runs)),
    )
