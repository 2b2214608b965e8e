#!/usr/bin/env bash
# Runs the suite on SQLite, then on PostgreSQL when one is reachable.
# Under CI=true an unreachable PostgreSQL, or a Redis that neither answers nor can be started here
# (checked again in tests/conftest.py), is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

PG_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
# Tests use a Redis database of their own, for the update stream and for Celery's queues alike.
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/13}"

# No Redis answers there: start a private one for this run (as `make run` does), rather than skip or
# fail every test that needs one. Stopped, and its directory removed, however the run ends.
REDIS_DIR=""
REDIS_PID=""
stop_private_redis() {
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$REDIS_PID" 2>/dev/null || true
    fi
    if [ -n "$REDIS_DIR" ]; then rm -rf "$REDIS_DIR"; fi
}
trap stop_private_redis EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
REDIS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/taskhub-test-redis.XXXXXX")"
if PRIVATE="$("$PY" scripts/private_redis.py "$TEST_REDIS_URL" "$REDIS_DIR")"; then
    if [ -n "$PRIVATE" ]; then
        read -r PRIVATE_URL REDIS_PID <<<"$PRIVATE"
        echo "No Redis answers at $TEST_REDIS_URL: using a private one at $PRIVATE_URL for this run"
        export TEST_REDIS_URL="$PRIVATE_URL"
    fi
elif [ "${CI:-}" = "true" ]; then
    echo "CI=true and no Redis could be found or started: failing rather than skipping" >&2
    exit 1
else
    echo "Tests that need Redis will be skipped" >&2
fi
export REDIS_URL="$TEST_REDIS_URL" CELERY_BROKER_URL="$TEST_REDIS_URL"

# The dashboard's browser test (tests/test_dashboard_live.py) drives Debian's chromium through its
# chromedriver. Browser builds that download themselves (selenium-manager, Playwright) cannot be fetched
# here, so the distribution's packages are installed when missing; the test skips without them, or fails
# under CI=true.
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver
install_browser() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || return 1
        sudo="sudo -n"
    fi
    command -v apt-get >/dev/null 2>&1 || return 1
    local install=($sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)
    # A stale package index is the usual reason an install fails: refresh it once and try again.
    "${install[@]}" >/dev/null 2>&1 || { $sudo apt-get update -qq >/dev/null 2>&1 && "${install[@]}" >/dev/null 2>&1; }
}
if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ]; then
    echo "Installing Debian's chromium and chromium-driver for the dashboard's browser test"
    install_browser || true
    if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ]; then
        if [ "${CI:-}" = "true" ]; then
            echo "CI=true and chromium/chromium-driver could not be installed: failing rather than skipping" >&2
            exit 1
        fi
        echo "chromium/chromium-driver could not be installed: the dashboard's browser test will be skipped" >&2
    fi
fi

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
