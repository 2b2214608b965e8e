"""The shape that keeps the two sides apart, checked on the running code (the import contracts in
pyproject.toml check the source, with `lint-imports` in `make test`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

# What a node worker's process loads: its settings, the Celery app with its tasks (CELERY_IMPORTS),
# the runtime, every family. Then what it has: its database settings, its apps, the server's modules.
NODE_PROCESS = """
import json, sys
import django
django.setup()
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from taskhub.celery import app
app.loader.import_default_modules()
import workers.node.fanout, workers.node.redelivery, workers.node.heartbeat
from workers.protocol import specs
specs.load()
try:
    connection.cursor()
    query = "ran"
except ImproperlyConfigured as exc:
    query = str(exc)
print(json.dumps({
    "databases": settings.DATABASES,
    "apps": list(settings.INSTALLED_APPS),
    "tasks": sorted(name for name in app.tasks if name.startswith("taskhub.")),
    "types": specs.known(),
    "server": sorted(m for m in sys.modules if m.split(".")[0] in ("tasks_app", "cli")),
    "query": query,
}))
"""


def test_a_node_worker_has_no_database_and_never_loads_the_server() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DJANGO_SETTINGS_MODULE"] = "taskhub.settings_node"
    done = subprocess.run(
        [sys.executable, "-c", NODE_PROCESS], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # None configured: Django fills in its dummy backend, which has nowhere to connect to.
    assert list(seen["databases"]) == ["default"]
    assert seen["databases"]["default"]["ENGINE"] == "django.db.backends.dummy"
    assert not any(seen["databases"]["default"].get(k) for k in ("NAME", "HOST", "USER", "PASSWORD"))
    assert seen["apps"] == ["workers"]
    assert seen["server"] == []
    assert "settings.DATABASES is improperly configured" in seen["query"]  # Django's dummy backend refuses
    assert seen["tasks"] == ["taskhub.execute", "taskhub.execute_part"]  # none of the server's sweeps
    assert {"noop", "block_alloc", "block_free", "volume_create", "vdag_deletion", "node_removal"} <= set(seen["types"])


def test_the_node_entry_point_runs_the_worker_under_the_node_settings(tmp_path: object) -> None:
    from workers.__main__ import NODE_SETTINGS, build

    argv, env = build(["node9", "--data-dir", str(tmp_path), "--concurrency", "2"])
    assert env["DJANGO_SETTINGS_MODULE"] == NODE_SETTINGS == "taskhub.settings_node"
    assert argv[1:6] == ["-m", "celery", "-A", "taskhub", "worker"]
    assert argv[argv.index("--queues") + 1] == "node.node9"
    assert (env["TASKHUB_NODE_NAME"], env["TASKHUB_NODE_DATA_DIR"]) == ("node9", str(tmp_path))
