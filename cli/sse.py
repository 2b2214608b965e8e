"""Server-Sent Events, read from a stream of lines (the WHATWG rules, as much of them as taskhub's
GET /api/v1/events/ uses: id, event, data, retry and comments)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SseEvent:
    event: str  # "message" when the stream named none
    data: str
    id: str | None  # the last id the stream set, as Last-Event-ID carries it


def parse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """The events in `lines` (each without its line ending), one per blank-line-ended block with data."""
    event, last_id = "", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue  # a comment: keepalive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
