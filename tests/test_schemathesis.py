"""The OpenAPI schema (/api/schema/) against what the server does: schemathesis generates requests from
the schema, valid and invalid, and checks every answer (--checks all): no server errors, no status code
or body the schema does not describe, no valid request refused and no invalid one accepted.

A real server (gunicorn, as in production) on this test's database and Redis prefix; `schemathesis run`
against it as an operator, as a service account and without credentials. tests/schemathesis.toml and
tests/schemathesis_hooks.py hold its configuration; README "Development" shows how to run it alone.
Select with `-m schemathesis`; TASKHUB_SCHEMATHESIS_SECONDS is each run's time budget.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token

from tasks_app.api.permissions import SERVICES_GROUP
from tests.conftest import ROOT
from tests.helpers import free_port, start_gunicorn, stop

pytestmark = [
    pytest.mark.schemathesis,
    pytest.mark.redis,
    pytest.mark.slow,
    # The server is another process: the accounts this test creates must be committed for it to see them.
    pytest.mark.django_db(transaction=True),
]

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = ROOT / "tests" / "schemathesis.toml"
# Seconds per run: with a time budget, schemathesis keeps generating until it is spent. Three runs and
# the servers' start stay under two minutes.
BUDGET = int(os.environ.get("TASKHUB_SCHEMATHESIS_SECONDS", "25"))
MAX_EXAMPLES = 25  # per operation and phase, before the next round


@pytest.fixture
def server(child_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """gunicorn with gunicorn.conf.py, one worker on loopback; its base URL."""
    port = free_port()
    env = {k: v for k, v in child_env.items() if k not in ("GUNICORN_CMD_ARGS", "GUNICORN_THREADS")}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.schemathesis_settings",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="1",
        GUNICORN_GRACEFUL_TIMEOUT="2",
        # Anonymous seed API access from loopback, the default, whatever the environment says.
        TASKHUB_SEED_ANON_NETWORKS="127.0.0.0/8,::1/128",
    )
    log = tmp_path / "server.log"
    base_url = f"http://127.0.0.1:{port}"
    proc = start_gunicorn(env, log, base_url)
    try:
        yield base_url
    finally:
        stop(proc)
        # The server's tracebacks, for a 500 schemathesis reports: its log without the request lines.
        quiet = re.compile(r'HTTP/1\.[01]" \d{3} |WARNING django\.request')
        lines = [line for line in log.read_text(errors="replace").splitlines() if not quiet.search(line)]
        print("--- server log, requests left out ---", *lines[-400:], sep="\n")


@pytest.fixture
def tokens(operator_token: str, django_user_model: Any) -> dict[str, str]:
    service = django_user_model.objects.create_user("schemathesis-service")
    service.groups.add(Group.objects.get_or_create(name=SERVICES_GROUP)[0])
    return {"operator": operator_token, "service": str(Token.objects.create(user=service).key)}


def schemathesis(base_url: str, token: str | None) -> subprocess.CompletedProcess[str]:
    auth = ["--header", f"Authorization: Token {token}"] if token else []
    return subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(CONFIG),
            "run",
            f"{base_url}/api/schema/?format=json",
            "--checks",
            "all",
            "--mode",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--max-time",
            str(BUDGET),
            # One worker: hypothesis' generation is not thread-safe on Python 3.11 (an AST recursion
            # error from parallel workers was seen), and the server is one process anyway.
            "--workers",
            "1",
            "--no-color",
            *auth,
        ],
        cwd=ROOT,  # the config's hooks path is relative to it
        capture_output=True,
        text=True,
        timeout=BUDGET + 120,
        check=False,
    )


@pytest.mark.parametrize("who", ["operator", "service", "anonymous"])
def test_the_server_does_what_its_schema_says(server: str, tokens: dict[str, str], who: str) -> None:
    run = schemathesis(server, tokens.get(who))
    print(run.stdout[-60000:], run.stderr[-10000:], sep="\n")
    assert run.returncode == 0, f"schemathesis as {who} failed (exit {run.returncode}); its report is printed above"
