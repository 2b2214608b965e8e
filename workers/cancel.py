"""Cancellation markers in Redis. The server sets one when a task is cancelled; nodes (which have
no database) check it before they start a task and between a long handler's steps."""

from __future__ import annotations

from django.conf import settings

from tasks_app import update_stream

_TTL = 7 * 24 * 3600


def _key(task_id: str) -> str:
    return f"{settings.TASKHUB_STREAM_PREFIX}:cancel:{task_id}"


def mark_cancelled(task_id: str) -> None:
    update_stream.client().set(_key(task_id), "1", ex=_TTL)


def clear(task_id: str) -> None:
    update_stream.client().delete(_key(task_id))


def is_cancelled(task_id: str) -> bool:
    return bool(update_stream.client().exists(_key(task_id)))


def _void_key(task_id: str, attempt: int) -> str:
    return f"{settings.TASKHUB_STREAM_PREFIX}:void:{task_id}:{attempt}"


def void_attempt(task_id: str, attempt: int) -> None:
    """An attempt the server has ended (failed by the dead-node sweep, superseded by a retry): a
    message of it still queued on a node that comes back must not run."""
    update_stream.client().set(_void_key(task_id, attempt), "1", ex=_TTL)


def is_void(task_id: str, attempt: int) -> bool:
    return bool(update_stream.client().exists(_void_key(task_id, attempt)))
