"""`python manage.py run_stack`: what `make run` runs. Web server and writer on this machine."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from taskhub import devstack, private_files
from tasks_app.fleet import services as cluster_services
from tasks_app.ops import accounts


def demo_placement(index: int, count: int) -> dict[str, Any]:
    """The demo nodes' labels and capacity, to try placement on (docs/task-types.md, "Placement"): each in
    its own zone, the middle one (node2 of three) with an ssd, and 4 slots each."""
    disk = "ssd" if index == count // 2 else "hdd"
    return {"labels": {"zone": chr(ord("a") + index % 26), "disk": disk}, "capacity": {"slots": 4}}


class Command(BaseCommand):
    help = (
        "Run the whole local stack until Ctrl-C: web, writer, scheduler, and a demo cluster whose nodes each "
        "run their own worker (and a private Redis if none is listening)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="host:port for the web server")
        parser.add_argument("--writers", type=int, default=1, help="number of writer processes")
        parser.add_argument("--demo-cluster", default="demo", help="name of the demo cluster")
        parser.add_argument(
            "--demo-nodes",
            default="node1,node2,node3",
            help="comma-separated nodes of the demo cluster, each with its own worker ('' for none)",
        )
        parser.add_argument(
            "--seed-port",
            type=int,
            default=int(os.environ.get("TASKHUB_SEED_PORT", "5000")),
            help="also serve on 127.0.0.1:<port>, where the reference service's clients and examples "
            "expect it (0: don't)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        env = dict(os.environ)
        private_redis = None
        if not devstack.redis_alive(settings.REDIS_URL, settings.TASKHUB_REDIS_SENTINEL_MASTER):
            self.stdout.write(f"No Redis at {settings.REDIS_URL}; starting a private one ...")
            private_redis, env["REDIS_URL"] = devstack.start_private_redis(settings.VAR_DIR)
            env.setdefault("CELERY_BROKER_URL", env["REDIS_URL"])
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        procs = [devstack.Proc("web", [*manage, "runserver", options["addr"], "--noreload"], env)]
        seed_addr = None
        if options["seed_port"]:
            if devstack.port_free(options["seed_port"]):
                seed_addr = f"127.0.0.1:{options['seed_port']}"
                procs.append(devstack.Proc("web-seed-port", [*manage, "runserver", seed_addr, "--noreload"], env))
            else:
                self.stdout.write(f"Port {options['seed_port']} is taken; the seed-compatible port is not served.")
        procs += [devstack.Proc(f"writer-{i + 1}", [*manage, "run_writer"], env) for i in range(options["writers"])]
        procs.append(devstack.Proc("scheduler", [*manage, "run_scheduler", "--loglevel", "WARNING"], env))
        nodes = [n for n in options["demo_nodes"].split(",") if n]
        if nodes:
            cluster = cluster_services.cluster_ensure(name=options["demo_cluster"])
            for i, name in enumerate(nodes):
                data_dir = settings.VAR_DIR / "nodes" / name
                cluster_services.node_register(
                    cluster=cluster, name=name, data_dir=str(data_dir), **demo_placement(i, len(nodes))
                )
                argv = [sys.executable, "-m", "workers", name, "--data-dir", str(data_dir), "--loglevel", "WARNING"]
                procs.append(devstack.Proc(f"node {name}", argv, env))
        self._banner(
            options["addr"], seed_addr, env.get("REDIS_URL", settings.REDIS_URL), options["demo_cluster"], nodes
        )
        try:
            code = devstack.supervise(procs)
        finally:
            if private_redis is not None:
                private_redis.terminate()
                private_redis.wait(timeout=10)
        sys.exit(code)

    def _banner(self, addr: str, seed_addr: str | None, redis_url: str, cluster: str, nodes: list[str]) -> None:
        user, password = self._admin_login()
        base = f"http://{addr}"
        token, cli_note = self._cli_login(user, base)
        lines = [
            "",
            "taskhub is running. Ctrl-C stops everything.",
            f"  Seed API        {base}/task  {base}/tasks  {base}/task_update",
            f"  REST API        {base}/api/v1/tasks/",
            f"  API docs        {base}/api/docs/   (schema: {base}/api/schema/)",
            f"  Admin           {base}/admin/   user {user!r}, password {password}",
            f"  API token       export TASKHUB_URL={base} TASKHUB_TOKEN={token}   (user {user!r})",
            f"  CLI             {cli_note}",
            f"  Health          {base}/healthz",
            *([f"  Seed API also   http://{seed_addr}/  (the reference service's port)"] if seed_addr else []),
            f"  Redis           {redis_url}",
            *(
                [
                    f"  Demo cluster    {cluster!r}: nodes {', '.join(nodes)}, data in {settings.VAR_DIR / 'nodes'}",
                    f"  Try             .venv/bin/taskhub volume create vol1 --cluster {cluster} "
                    + " ".join(f"--unit {n}" for n in nodes)
                    + " --watch",
                    f"                  .venv/bin/taskhub node list   (labels zone=a.., disk=ssd on "
                    f"{nodes[len(nodes) // 2]}, 4 slots each; cordon, drain, uncordon)",
                ]
                if nodes
                else []
            ),
            "",
        ]
        self.stdout.write("\n".join(lines))

    def _cli_login(self, username: str, base: str) -> tuple[str, str]:
        """The admin's API token, and the CLI logged in with it, through its own command (the server never
        imports the CLI): its config file is written when there is none, or when it points at this same
        URL (a stale token of an earlier run). A config for any other server is left alone."""
        user = get_user_model()._default_manager.get_by_natural_key(username)
        token = accounts.token_issue(user=user)
        login = [sys.executable, "-m", "cli", "login", "--url", base, "--token-stdin", "--keep-other"]
        try:
            done = subprocess.run(login, input=token + "\n", capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return token, f"not logged in: {exc} (use the export line above)"
        said = (done.stdout or done.stderr).strip().splitlines()
        if done.returncode != 0:
            return token, f"not logged in: {said[-1] if said else done.returncode} (use the export line above)"
        if said and "left alone" in said[-1]:
            return token, f"{said[-1]} (use the export line above)"
        return token, f".venv/bin/taskhub is logged in as {username!r} ({said[-1] if said else 'saved'})"

    def _admin_login(self) -> tuple[str, str]:
        """Make sure there is an admin to log in with; print how, without overwriting a real account."""
        user_model = get_user_model()
        pw_file = settings.VAR_DIR / "admin-password"
        username = os.environ.get("TASKHUB_ADMIN_USER", "admin")
        if not user_model.objects.filter(username=username).exists():
            password = os.environ.get("TASKHUB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            user_model.objects.create_superuser(username=username, email="", password=password)
            private_files.write_private(pw_file, password + "\n")
            return username, password
        if pw_file.exists():
            return username, pw_file.read_text().strip()
        return username, "(as you set it; `python manage.py changepassword admin` resets it)"
