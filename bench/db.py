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
    """The table holds exactly cfg.rows bulk rows afterwards. Returns (rows, seconds spent loading or None).

    Works on any bench database (cfg.database_url), not only the one this process's Django uses:
    section (g) keeps its 10M rows in a database of their own."""
    with connect(cfg.database_url) as conn:
        have, intact = _bulk_rows_state(conn, cfg)
        if have == cfg.rows and intact:
            return have, None
    print(f"loading {cfg.rows:,} rows into global_task of {cfg.database_name} (found {have:,}) ...", flush=True)
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


def _bulk_rows_state(conn: psycopg.Connection[Any], cfg: Config) -> tuple[int, bool]:
    """(bulk rows, whether they are what _load makes): the same spread of types and statuses (a run
    killed half-way leaves none of it) and distinct created_ns (tables loaded before created_ns was set
    have one value in every row, which would make the v1 list's keyset sort). One scan, hashed."""
    row = conn.execute(
        """SELECT count(*), coalesce(sum(n), 0), coalesce(min(lo) < max(hi), false) FROM (
               SELECT count(*) AS n, min(created_ns) AS lo, max(created_ns) AS hi FROM global_task
               WHERE task_type LIKE %s GROUP BY task_type, task_status) AS pairs""",
        (_like_prefix(),),
    ).fetchone()
    if row is None:
        return 0, False
    pairs, have, varied = int(row[0]), int(row[1]), bool(row[2])
    return have, pairs == min(cfg.task_types * len(STATUSES), cfg.rows) and (varied or cfg.rows < 2)


def _load(cfg: Config) -> None:
    """One transaction: empty the table, drop its secondary indexes, insert, rebuild them.

    Rows are spread over cfg.task_types types and the six statuses evenly (type by i % types,
    status by (i / types) % 6, so every (type, status) pair is equally common), with create
    times over the last 30 days, created_ns following them (distinct, as the API's are) and
    uuid-shaped ids like the API's. Building the indexes once after the insert is several times
    faster than maintaining them row by row; DDL is transactional in PostgreSQL, so a run killed
    half-way changes nothing.
    """
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
            # Nanoseconds within the create second, in load order: the v1 list's keyset (created_ns, task_id).
            "created_ns": (f"(%s + {spread}) * 1000000000 + i", [t0]),
        },
    )
    # psycopg on cfg.database_url (Django only builds the statement): the load may target another database.
    with psycopg.connect(cfg.libpq_url) as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL maintenance_work_mem = '1GB'")  # 10M-row index builds sort in memory
        # CASCADE: the bench database is the bench's own; rows that point at tasks go with them.
        cur.execute("TRUNCATE global_task_history, global_task CASCADE")
        cur.execute(
            """SELECT i.relname, pg_get_indexdef(i.oid)
               FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
               WHERE x.indrelid = 'global_task'::regclass AND NOT x.indisprimary AND NOT x.indisunique"""
        )
        indexes = cur.fetchall()
        # The primary key too (random md5 ids make its upkeep the slowest part of a 10M-row insert), and the
        # foreign keys that need it; every definition is PostgreSQL's own text, put back as it was.
        cur.execute(
            """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
               WHERE (confrelid = 'global_task'::regclass AND contype = 'f')
                  OR (conrelid = 'global_task'::regclass AND contype = 'p')
               ORDER BY contype = 'p'"""
        )
        constraints = cur.fetchall()  # the foreign keys first: they depend on the primary key
        for table, name, _ in constraints:
            cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.SQL(table), sql.Identifier(name)))
        for name, _ in indexes:
            cur.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        cur.execute(load_sql, params)
        for table, name, definition in reversed(constraints):
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.SQL(table), sql.Identifier(name), sql.SQL(definition)
                )
            )
        for _, definition in indexes:
            cur.execute(definition)  # pg_get_indexdef's own text
