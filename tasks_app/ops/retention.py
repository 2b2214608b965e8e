"""Retention: purge finished tasks (completed, failed, cancelled) that nobody has touched for
TASKHUB_RETENTION_DAYS, with their history, in short bounded transactions.

A pass walks the (task_update_timestamp, task_id) index from the oldest row, picks up to
TASKHUB_RETENTION_BATCH finished ones below the cutoff, and then, in one short transaction, locks
exactly those rows (re-checking that they are still finished and old: a retry may have revived
one meanwhile), optionally archives them, and deletes their history rows and the tasks. It repeats
until nothing is left, TASKHUB_RETENTION_MAX_BATCHES batches are done, or TASKHUB_RETENTION_MAX_SECONDS
have passed. No transaction ever holds more than one batch of rows.

With TASKHUB_ARCHIVE_DIR set, each purged task (the seed's seven fields, its node and its history)
is appended as one JSON line to <dir>/tasks-YYYY-MM-DD.jsonl (UTC date of the purge), written and
fsynced before the delete commits. A crash in between leaves the rows in place, so the next pass
writes them again: a line may be duplicated, never lost. Readers should key on task_id.

Records that completed tasks wrote (volumes, allocations, vDAGs) are not tasks and are kept.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from tasks_app.ops import metrics
from tasks_app.tasks.models import SEED_FIELDS, GlobalTask, TaskStatusChange, now_ts
from workers.protocol.status import TERMINAL

log = logging.getLogger(__name__)

FINISHED = sorted(str(s) for s in TERMINAL)
# What an archive line holds besides "history": the seed's seven fields, the node and the last run.
ARCHIVE_FIELDS = (*SEED_FIELDS, "node", "run_id")


@dataclass
class PurgeResult:
    cutoff: int | None  # tasks last updated before this epoch second were eligible; None: retention off
    purged: int = 0  # tasks deleted (or, on a dry run, that would be)
    history_rows: int = 0
    batches: int = 0
    archived: int = 0  # lines written to the archive
    archive_file: str = ""
    more: bool = False  # stopped by the batch or time budget with eligible tasks possibly left
    dry_run: bool = False


def cutoff_for(days: float, now: int | None = None) -> int | None:
    """The epoch second before which finished tasks go; None when retention is off (days <= 0)."""
    if days <= 0:
        return None
    return (now_ts() if now is None else now) - int(days * 86400)


def eligible(cutoff: int) -> int:
    """How many tasks a purge with this cutoff would delete now."""
    return GlobalTask.objects.filter(task_update_timestamp__lt=cutoff, task_status__in=FINISHED).count()


def purge_finished(
    *,
    days: float | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    max_seconds: float | None = None,
    archive_dir: str | None = None,
    dry_run: bool = False,
    now: int | None = None,
) -> PurgeResult:
    """One retention pass. Arguments left out come from settings; max_batches or max_seconds <= 0
    mean no limit (the management command's default)."""
    days = float(settings.TASKHUB_RETENTION_DAYS if days is None else days)
    size = max(1, int(settings.TASKHUB_RETENTION_BATCH if batch_size is None else batch_size))
    limit = int(settings.TASKHUB_RETENTION_MAX_BATCHES if max_batches is None else max_batches)
    budget = float(settings.TASKHUB_RETENTION_MAX_SECONDS if max_seconds is None else max_seconds)
    folder = settings.TASKHUB_ARCHIVE_DIR if archive_dir is None else archive_dir

    result = PurgeResult(cutoff=cutoff_for(days, now), dry_run=dry_run)
    if result.cutoff is None:
        return result
    if dry_run:
        result.purged = eligible(result.cutoff)
        return result

    started = time.monotonic()
    after: tuple[int, str] | None = None
    while True:
        candidates = _candidates(result.cutoff, after, size)
        if not candidates:
            break
        after = candidates[-1]
        purged, history, archived, path = _purge_batch([tid for _, tid in candidates], result.cutoff, folder)
        result.batches += 1
        metrics.count_purged(purged)  # committed; never raises
        result.purged += purged
        result.history_rows += history
        result.archived += archived
        result.archive_file = path or result.archive_file
        if len(candidates) < size:
            break  # that was the tail
        if (limit > 0 and result.batches >= limit) or (budget > 0 and time.monotonic() - started >= budget):
            result.more = True
            break
    if result.purged:
        log.info(
            "retention: purged %s finished task(s) last updated before %s in %s batch(es)%s",
            result.purged,
            datetime.fromtimestamp(result.cutoff, UTC).isoformat(),
            result.batches,
            f"; archived to {result.archive_file}" if result.archive_file else "",
        )
    return result


def _candidates(cutoff: int, after: tuple[int, str] | None, size: int) -> list[tuple[int, str]]:
    """The next finished tasks below the cutoff, in (task_update_timestamp, task_id) order, after the
    cursor: a keyset walk of the task_updated index, so unfinished old rows are passed over once."""
    qs = GlobalTask.objects.filter(task_update_timestamp__lt=cutoff)
    if after is not None:
        ts, tid = after
        qs = qs.filter(task_update_timestamp__gte=ts).exclude(task_update_timestamp=ts, task_id__lte=tid)
    qs = qs.filter(task_status__in=FINISHED).order_by("task_update_timestamp", "task_id")
    return list(qs.values_list("task_update_timestamp", "task_id")[:size])


def _purge_batch(ids: list[str], cutoff: int, folder: str) -> tuple[int, int, int, str]:
    """Lock, (archive,) delete one batch in one transaction. Returns (tasks, history rows, lines, file)."""
    with transaction.atomic():
        # Same lock order as the transition function (task_id), so the two cannot deadlock. The
        # re-check skips a task that a retry revived or an update touched since it was picked.
        locked = GlobalTask.objects.select_for_update().filter(
            task_id__in=ids, task_status__in=FINISHED, task_update_timestamp__lt=cutoff
        )
        rows = list(locked.order_by("task_id").values(*ARCHIVE_FIELDS if folder else ("task_id",)))
        if not rows:
            return 0, 0, 0, ""
        keep = [str(r["task_id"]) for r in rows]
        path = ""
        if folder:
            path = str(_archive(rows, folder))
        history = _delete_where_task_id(TaskStatusChange._meta.db_table, "task_id", keep)
        purged = _delete_where_task_id(GlobalTask._meta.db_table, "task_id", keep)
    return purged, history, len(rows) if folder else 0, path


def _delete_where_task_id(table: str, column: str, ids: list[str]) -> int:
    # Plain DELETEs: the ORM's cascade would first load every task row just to learn its key.
    # Table and column names are our own constants; the ids are parameters.
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids)  # noqa: S608
        return max(int(cursor.rowcount), 0)


def _archive(rows: list[dict[str, Any]], folder: str) -> Path:
    """Append one JSON line per task (with its history) and fsync, before the delete commits."""
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    changes = (
        TaskStatusChange.objects.filter(task_id__in=[r["task_id"] for r in rows])
        .order_by("task_id", "at", "id")
        .values_list("task_id", "from_status", "to_status", "at", "source")
    )
    for tid, from_status, to_status, at, source in changes:
        change = {"from_status": from_status, "to_status": to_status, "at": at.isoformat(), "source": source}
        history[tid].append(change)
    archived_at = now_ts()
    lines = "".join(
        json.dumps({**row, "history": history.get(row["task_id"], []), "archived_at": archived_at}, default=str) + "\n"
        for row in rows
    )
    directory = Path(folder)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"tasks-{datetime.now(UTC):%Y-%m-%d}.jsonl"
    new = not path.exists()
    # One write of the whole batch, then fsync. A crash mid-write leaves a torn last line: it is
    # closed with a newline first, so it stays one bad line, and the next pass writes those tasks again.
    torn = not new and _ends_without_newline(path)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(("\n" if torn else "") + lines)
        fh.flush()
        os.fsync(fh.fileno())
    if new:
        _fsync_dir(directory)  # the new file's directory entry must survive a crash too
    return path


def _ends_without_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        if fh.seek(0, os.SEEK_END) == 0:
            return False
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)
