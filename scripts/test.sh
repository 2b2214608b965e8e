#!/usr/bin/env bash
# Runs the suite on SQLite, then on PostgreSQL when one is reachable.
# Under CI=true an unreachable PostgreSQL (or Redis, checked in tests/conftest.py) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

PG_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
# Tests use a Redis database of their own, for the update stream and for Celery's queues alike.
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/13}"
export REDIS_URL="$TEST_REDIS_URL" CELERY_BROKER_URL="$TEST_REDIS_URL"

echo "== tests on SQLite =="
env -u DATABASE_URL "$PY" -m pytest "$@"

if "$PY" - "$PG_URL" <<'PYEOF'
import sys, psycopg
try:
    psycopg.connect(sys.argv[1].replace("postgres://", "postgresql://", 1), connect_timeout=3).close()
except Exception as exc:
    print(f"PostgreSQL not reachable at {sys.argv[1]}: {exc}", file=sys.stderr)
    sys.exit(1)
PYEOF
then
    echo "== tests on PostgreSQL ($PG_URL) =="
    DATABASE_URL="$PG_URL" "$PY" -m pytest "$@"
elif [ "${CI:-}" = "true" ]; then
    echo "CI=true and PostgreSQL is not reachable: failing rather than skipping" >&2
    exit 1
else
    echo "PostgreSQL not reachable; skipped the PostgreSQL run (set TEST_DATABASE_URL to point at one)"
fi
