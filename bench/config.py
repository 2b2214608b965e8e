"""What the benchmark runs against, from the environment, and the environment it gives Django."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# Marks the bench's own Redis keys; only keys under it are ever deleted.
STREAM_PREFIX = "taskhub-bench:updates"
# Every row of the 1M-row table has one of these task types; anything else is the bench's scratch.
BULK_TYPE_PREFIX = "bulk_type_"
STATUSES = ("pending", "received", "in_progress", "completed", "failed", "cancelled")


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass(frozen=True)
class Config:
    database_url: str
    redis_url: str
    workers: int
    duration_s: int
    rounds: int
    rows: int
    task_types: int
    writer_tasks: int
    writer_processes: tuple[int, ...]
    baseline_max_s: int
    latency_requests: int
    http_connections: int
    e2e_tasks: int
    e2e_threads: int
    e2e_rate: int
    steady_minutes: float  # (d)'s steady run at e2e_rate: latency, and memory after warm-up vs at the end
    e2e_max_s: int

    @property
    def admin_database_url(self) -> str:
        """The same server's `postgres` database, to create the bench database from."""
        parts = urlsplit(self.database_url)
        return urlunsplit(parts._replace(path="/postgres"))

    @property
    def database_name(self) -> str:
        return urlsplit(self.database_url).path.lstrip("/")

    @property
    def libpq_url(self) -> str:
        return self.database_url.replace("postgres://", "postgresql://", 1)


def load() -> Config:
    # The production default: gunicorn.conf.py takes WEB_CONCURRENCY, else 2. Passed explicitly so
    # that the app and the baseline servers always run the same number.
    workers = _int("BENCH_WORKERS", _int("WEB_CONCURRENCY", 2))
    return Config(
        database_url=os.environ.get("BENCH_DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/taskhub_bench",
        redis_url=os.environ.get("BENCH_REDIS_URL") or "redis://127.0.0.1:6379/14",
        workers=workers,
        duration_s=_int("BENCH_DURATION", 10),
        rounds=_int("BENCH_ROUNDS", 3),
        rows=_int("BENCH_ROWS", 1_000_000),
        task_types=_int("BENCH_TASK_TYPES", 10),
        writer_tasks=_int("BENCH_WRITER_TASKS", 20_000),
        writer_processes=tuple(int(n) for n in (os.environ.get("BENCH_WRITER_PROCESSES") or "1,2,4").split(",")),
        baseline_max_s=_int("BENCH_BASELINE_MAX_SECONDS", 10),
        latency_requests=_int("BENCH_LATENCY_REQUESTS", 500),
        http_connections=_int("BENCH_CONNECTIONS", 4 * workers),
        e2e_tasks=_int("BENCH_E2E_TASKS", 2000),
        e2e_threads=_int("BENCH_E2E_THREADS", 4),
        e2e_rate=_int("BENCH_E2E_RATE", 50),
        steady_minutes=float(os.environ.get("BENCH_STEADY_MINUTES") or 10),
        e2e_max_s=_int("BENCH_E2E_MAX_SECONDS", 300),  # a slow peer round on a loaded machine is not a hang
    )


def child_env(cfg: Config, settings_module: str = "taskhub.settings") -> dict[str, str]:
    """Environment for manage.py and gunicorn children (and for this process's own Django)."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        DATABASE_URL=cfg.database_url,
        REDIS_URL=cfg.redis_url,
        CELERY_BROKER_URL=cfg.redis_url,
        TASKHUB_STREAM_PREFIX=STREAM_PREFIX,
        SECRET_KEY="bench-only-secret-key-not-for-production-0123456789abcdef",  # noqa: S106
        DEBUG="false",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
    )
    return env


def setup_django(cfg: Config) -> None:
    """Point this process's Django at the bench database and stream, then set it up."""
    os.environ.update(child_env(cfg))
    os.environ["LOG_LEVEL"] = "WARNING"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()
