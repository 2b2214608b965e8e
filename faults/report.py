"""The suite's table: one row per experiment, in Markdown (docs/reliability.md keeps one), notes below it."""

from __future__ import annotations

from faults.audit import Row

HEADER = (
    "experiment", "submitted", "terminal", "lost", "run twice", "moved backwards", "stuck", "recovery",
    "API during the outage",
)  # fmt: skip


def recovery_text(row: Row) -> str:
    if row.stuck:
        return "not recovered"
    return "-" if row.recovery is None else f"{row.recovery:.1f} s"


def cells(row: Row) -> tuple[str, ...]:
    counts = (row.submitted, row.terminal, row.lost, row.run_twice, row.backwards, row.stuck)
    return (row.experiment, *(f"{n:,}" for n in counts), recovery_text(row), row.api)


def table(rows: list[Row]) -> str:
    body = [HEADER, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(HEADER))]

    def line(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    out = [line(HEADER), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(c) for c in body[1:])]
    notes = [f"- {r.experiment}: {note}" for r in rows for note in r.notes]
    return "\n".join([*out, *(["", *notes] if notes else [])])


def failed(row: Row) -> bool:
    """What `make faults` fails on: anything lost, run twice, moved backwards or stuck, or an experiment
    that could not run."""
    broken = any(note.startswith("error:") for note in row.notes)
    return broken or bool(row.lost or row.run_twice or row.backwards or row.stuck)
