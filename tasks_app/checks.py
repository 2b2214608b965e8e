"""System checks of taskhub's own settings, registered in TasksAppConfig.ready(). `manage.py check --deploy`:
Django's own deploy checks miss both the public dev key (long and random-looking) and '*', a valid
ALLOWED_HOSTS entry. Every command's checks: the task types TASKHUB_LATENCY_OBJECTIVES names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning


def secret_key_is_not_public(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """The default SECRET_KEY is in the source: with it anyone can forge sessions, password-reset
    links and signed values. As a fallback key it is as bad: signatures made with it still verify."""
    public = settings.DEV_SECRET_KEY
    where = [name for name in ("SECRET_KEY", "SECRET_KEY_FALLBACKS") if public in _keys(name)]
    if not where:
        return []
    return [
        Error(
            f"{' and '.join(where)} holds taskhub's public development key: anyone can forge sessions, "
            "password-reset links and other signed values.",
            hint="Set SECRET_KEY in the environment to a long random value, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'.",
            id="taskhub.E001",
        )
    ]


def allowed_hosts_has_no_wildcard(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """With '*' Django believes any Host header, and the absolute URLs it builds from it (password-reset
    links, the next-page links of /api/v1 and the seed API) can be pointed at an attacker's host."""
    if "*" not in settings.ALLOWED_HOSTS:
        return []
    return [
        Warning(
            "ALLOWED_HOSTS contains '*': any Host header is accepted, so a forged one can poison the absolute "
            "URLs built from it (password-reset links, the next-page links of /api/v1 and the seed API).",
            hint="Set ALLOWED_HOSTS in the environment to the host names clients use, comma-separated.",
            id="taskhub.W001",
        )
    ]


def latency_objectives_name_task_types(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """An objective for a type the server does not know would never be judged: a typo must not pass for
    an objective that holds. (The value's syntax is checked as settings load: tasks_app/ops/objectives.py.)"""
    from workers.protocol import specs

    known = set(specs.known())
    unknown = sorted(set(settings.TASKHUB_LATENCY_OBJECTIVES) - known)
    if not unknown:
        return []
    return [
        Error(
            f"TASKHUB_LATENCY_OBJECTIVES names {', '.join(repr(t) for t in unknown)}, not an executable task type: "
            "its objective would never be judged.",
            hint=f"The executable task types are: {', '.join(sorted(known))}.",
            id="taskhub.E002",
        )
    ]


def _keys(name: str) -> list[str]:
    value = getattr(settings, name)
    return [value] if isinstance(value, str) else list(value)
