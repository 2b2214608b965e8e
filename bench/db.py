"""The bench database: created if missing, migrated, and holding the 1M-row table for the list query."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import psycopg
from psycopg import sql

from bench.config import BULK_TYPE_PREFIX, PYTHON, ROOT, STATUSES, Config, child_env
from bench.rows import insert_select


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True)


def ensure_database(cfg: Config) -> None:
    with connect(cfg.admin_database_url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (cfg.database_name,)).fetchone()
        if not exists:
            print(f"creating database {cfg.database_name} ...", flush=True)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg.database_name)))


def migrate(cfg: Config) -> None:
    """`manage.py migrate`; a bench database whose schema came from migration files that have since
    been rewritten cannot be migrated, and is dropped and made anew (it holds only bench data)."""
    argv = [PYTHON, "manage.py", "migrate", "--noinput", "-v0"]
    done = subprocess.run(argv, cwd=ROOT, env=child_env(cfg), timeout=300, capture_output=True, text=True)
    if done.returncode == 0:
        return
    print(f"migrate failed on {cfg.database_name}:\n{done.stderr.strip().splitlines()[-1]}", flush=True)
    print(f"dropping and recreating {cfg.database_name} (bench data only) ...", flush=True)
    with connect(cfg.admin_database_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(cfg.database_name)))
    ensure_database(cfg)
    subprocess.run(argv, cwd=ROOT, env=child_env(cfg), check=True, timeout=300)


def server_version(cfg: Config) -> str:
    with connect(cfg.database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def remove_scratch(cfg: Config) -> None:
    """Drop everything but the 1M bulk rows: what POST /task and the writer runs created."""
    with connect(cfg.database_url) as conn:
        conn.execute("TRUNCATE global_task_history")
        conn.execute("DELETE FROM global_task WHERE task_type NOT LIKE %s", (_like_prefix(),))
        conn.execute("DELETE FROM global_task_stream_offset")


def ensure_bulk_rows(cfg: Config) -> tuple[int, float | None]:
    """The table holds exactly cfg.rows bulk rows afterwards. Returns (rows, seconds spent loading or None)."""
    with connect(cfg.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM global_task WHERE task_type LIKE %s", (_like_prefix(),)).fetchone()
        have = int(row[0]) if row else 0
        if have == cfg.rows and _bulk_rows_intact(conn, cfg):
            return have, None
    print(f"loading {cfg.rows:,} rows into global_task (found {have:,}) ...", flush=True)
    started = time.perf_counter()
    _load(cfg)
    return cfg.rows, time.perf_counter() - started


def bulk_row_count(cfg: Config) -> int:
    with connect(cfg.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM global_task WHERE task_type LIKE %s", (_like_prefix(),)).fetchone()
    return int(row[0]) if row else 0


def reindex(cfg: Config) -> None:
    """Rebuild the indexes that earlier runs' inserts, updates and deletes have bloated, so every run
    starts from the same state as a fresh load (about 20 s on 1M rows)."""
    with connect(cfg.database_url) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("REINDEX TABLE global_task")
        conn.execute("REINDEX TABLE global_task_history")


def vacuum_analyze(cfg: Config) -> None:
    with connect(cfg.database_url) as conn:
        conn.execute("VACUUM (ANALYZE) global_task")
        conn.execute("VACUUM (ANALYZE) global_task_history")


def _like_prefix() -> str:
    return BULK_TYPE_PREFIX.replace("_", r"\_") + "%"


def _bulk_rows_intact(conn: psycopg.Connection[Any], cfg: Config) -> bool:
    """Same spread of types and statuses as _load makes (a run killed half-way leaves none of it)."""
    pairs = conn.execute(
        "SELECT count(DISTINCT (task_type, task_status)) FROM global_task WHERE task_type LIKE %s", (_like_prefix(),)
    ).fetchone()
    return pairs is not None and int(pairs[0]) == min(cfg.task_types * len(STATUSES), cfg.rows)


def _load(cfg: Config) -> None:
    """One transaction: empty the table, drop its secondary indexes, insert, rebuild them.

    Rows are spread over cfg.task_types types and the six statuses evenly (type by i % types,
    status by (i / types) % 6, so every (type, status) pair is equally common), with create
    times over the last 30 days and uuid-shaped ids like the API's. Building the indexes once
    after the insert is several times faster than maintaining them row by row; DDL is
    transactional in PostgreSQL, so a run killed half-way changes nothing.
    """
    from django.db import connection, transaction

    t0 = int(time.time()) - 30 * 86400
    spread = f"(i::bigint * 2592000 / {int(cfg.rows)})"
    load_sql, params = insert_select(
        f"generate_series(0, {int(cfg.rows) - 1}) AS i",
        {
            "task_id": ("md5('bulk' || i)::uuid::text", []),
            "task_data": ("jsonb_build_object('n', i, 'payload', 'bench row')", []),
            "task_type": (f"%s || (i %% {int(cfg.task_types)})", [BULK_TYPE_PREFIX]),
            "task_update_timestamp": (f"%s + {spread} + (i %% 3600)", [t0]),
            "task_create_timestamp": (f"%s + {spread}", [t0]),
            "task_status": (f"(%s::text[])[1 + (i / {int(cfg.task_types)}) %% 6]", [list(STATUSES)]),
            "task_status_data": ("'{}'::jsonb", []),
        },
    )
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
        # CASCADE: the bench database is the bench's own; rows that point at tasks go with them.
        cur.execute("TRUNCATE global_task_history, global_task CASCADE")
        cur.execute(
            """SELECT i.relname, pg_get_indexdef(i.oid)
               FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
               WHERE x.indrelid = 'global_task'::regclass AND NOT x.indisprimary AND NOT x.indisunique"""
        )
        indexes = cur.fetchall()
        for name, _ in indexes:
            cur.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
        cur.execute(load_sql, params)
        for _, definition in indexes:
            cur.execute(definition)  # pg_get_indexdef's own text
