"""Reads for the admin's dead-letter pages (/admin/dead-letters/). Redis being down is shown on the
page, not raised."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from tasks_app.tasks import dead_letters
from tasks_app.tasks.dead_letters import DeadLetter

PAGE_SIZE = 50


@dataclass(frozen=True)
class DeadLetterPage:
    items: list[DeadLetter] = field(default_factory=list)  # oldest first
    total: int | None = None  # None: Redis did not answer
    newest_id: str | None = None  # what "discard all" stops at, so later arrivals are kept
    next_after: str | None = None  # the cursor of the next page, if there may be one
    error: str = ""


def dead_letter_page(after: str | None = None, limit: int = PAGE_SIZE) -> DeadLetterPage:
    if after is not None and not dead_letters.is_id(after):
        after = None  # a mangled cursor: start from the oldest
    try:
        items = dead_letters.list(limit=limit, after=after)
        total = dead_letters.count()
        newest = dead_letters.newest_id()
    except (redis.RedisError, OSError) as exc:
        return DeadLetterPage(error=str(exc))
    next_after = items[-1].id if len(items) == limit and items[-1].id != newest else None
    return DeadLetterPage(items, total, newest, next_after)


def dead_letter_detail(dead_id: str) -> tuple[DeadLetter | None, str]:
    """The dead letter (None if there is no such one) and Redis's error, if it did not answer."""
    try:
        return dead_letters.get(dead_id), ""
    except (redis.RedisError, OSError) as exc:
        return None, str(exc)
