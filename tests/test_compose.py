"""docker-compose.yml, the Dockerfile and gunicorn.conf.py, checked against the code they start.

No Docker and no database: the files are parsed, and every command a container would run is resolved the way
its program would resolve it (Django's command registry, gunicorn's own option parser and app loader, Celery's
app finder), so a renamed command, module or setting fails here instead of in a crash-looping container.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
import uuid
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
import pytest
import redis
import yaml
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import CommandError
from django.test import override_settings

from tests.conftest import TEST_REDIS_URL
from workers.node import heartbeat
from workers.protocol import keys
from workers.protocol.payload import NAME_RE
from workers.protocol.queues import SERVER_QUEUE, node_queue

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
GUNICORN_CONF = ROOT / "gunicorn.conf.py"
SETTINGS_FILE = ROOT / "taskhub" / "settings.py"
SHARED_SETTINGS_FILE = ROOT / "taskhub" / "settings_shared.py"
NODE_ENTRY = ROOT / "workers" / "__main__.py"

NODE_SERVICES = {"node1", "node2", "node3"}
EXPECTED_SERVICES = {"postgres", "redis", "migrate", "web", "writer", "scheduler", *NODE_SERVICES}
# The ones that run the image the Dockerfile builds.
PROJECT_SERVICES = {"migrate", "web", "writer", "scheduler", *NODE_SERVICES}
LONG_RUNNING_WITH_HEALTHCHECK = {"postgres", "redis", "web", *NODE_SERVICES}
NODE_DATA_DIR = "/data"
WSGI_APP = "taskhub.wsgi:application"

# What an operator would export before `docker compose up` (the file demands the :? ones).
OPERATOR_ENV = {
    "SECRET_KEY": "s3cret-for-the-test",
    "POSTGRES_PASSWORD": "pw-for-the-test",
    "ALLOWED_HOSTS": "taskhub.example.com",
}


# --- loading -------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    svcs = compose()["services"]
    assert isinstance(svcs, dict)
    return svcs


def project_services() -> list[str]:
    """Services built from this repository (they have `build`), as opposed to stock images."""
    return sorted(name for name, svc in services().items() if "build" in svc)


def node_services() -> list[str]:
    """Services that run a node worker (python -m workers), whatever they are called."""
    return sorted(name for name in project_services() if argv(services()[name]["command"])[1:3] == ["-m", "workers"])


def argv(command: str | list[str]) -> list[str]:
    """A compose `command` (exec list or shell-style string) as the argv the container gets."""
    return [str(part) for part in command] if isinstance(command, list) else shlex.split(command)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of compose's two spellings, as written (not interpolated)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


_INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        present = name in env
        value = env.get(name, "")
        unset = not value if op and op.startswith(":") else not present
        if op and op.endswith("?") and unset:
            raise LookupError(f"{name}: {arg}")
        if op and op.endswith("-") and unset:
            return arg
        return value

    return _INTERPOLATION.sub(substitute, value)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerfile_argv(instruction: str) -> list[str]:
    """The argv of the last CMD or ENTRYPOINT (exec form as JSON, shell form through /bin/sh -c)."""
    values = [args for keyword, args in dockerfile_instructions() if keyword == instruction]
    if not values:
        return []
    last = values[-1]
    if last.startswith("["):
        parsed = json.loads(last)
        assert isinstance(parsed, list)
        return [str(part) for part in parsed]
    return ["/bin/sh", "-c", last]


# --- resolving an entry point the way its program would ------------------------------------------


def gunicorn_options(args: list[str]) -> Any:
    """gunicorn's own command-line parser (an unknown option fails here as it would in the container)."""
    config_module = importlib.import_module("gunicorn.config")
    parser = config_module.Config(prog="gunicorn").parser()
    try:
        return parser.parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f"gunicorn rejects its arguments {args}") from exc


def check_entry_point(command: list[str]) -> None:
    """Fails (AssertionError) unless `command` starts something that exists in this code base."""
    assert command, "empty command"
    program = Path(command[0]).name
    if program.startswith("python") and command[1:2] == ["manage.py"]:
        assert len(command) > 2, "manage.py without a command"
        name, rest = command[2], command[3:]
        commands = get_commands()
        assert name in commands, f"manage.py has no command {name!r}"
        parser = load_command_class(commands[name], name).create_parser("manage.py", name)
        try:
            parser.parse_args(rest)
        except CommandError as exc:
            raise AssertionError(f"manage.py {name} rejects {rest}: {exc}") from exc
    elif program == "gunicorn":
        options = gunicorn_options(command[1:])
        assert len(options.args) == 1, f"gunicorn needs exactly one APP_MODULE, got {options.args}"
        util = importlib.import_module("gunicorn.util")
        try:
            application = util.import_app(options.args[0])  # what gunicorn itself does at boot
        except (ImportError, AttributeError, util.AppImportError) as exc:
            raise AssertionError(f"gunicorn cannot load {options.args[0]!r}: {exc}") from exc
        assert callable(application), f"{options.args[0]} is not callable"
        try:
            inspect.signature(application).bind({}, lambda status, headers, exc_info=None: None)
        except TypeError as exc:
            raise AssertionError(f"{options.args[0]} is not a WSGI callable (environ, start_response)") from exc
    elif program.startswith("python") and command[1:3] == ["-m", "workers"]:
        from workers.__main__ import build

        try:
            build(command[3:])
        except SystemExit as exc:
            raise AssertionError(f"python -m workers rejects {command[3:]}") from exc
    elif program == "celery":
        check_celery(command[1:])
    else:
        raise AssertionError(f"no check for entry point {command[0]!r}; teach check_entry_point about it")


def check_celery(args: list[str]) -> None:
    app_name = ""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-A", "--app"):
            app_name = rest.pop(0) if rest else ""
        elif option.startswith("--app="):
            app_name = option.split("=", 1)[1]
    assert app_name, "celery without -A/--app would not find the taskhub app"
    assert app_name.split(".")[0].split(":")[0] == "taskhub", f"celery -A {app_name}: not the taskhub app"
    find_app = importlib.import_module("celery.app.utils").find_app
    try:
        app = find_app(app_name)
    except (ImportError, AttributeError) as exc:
        raise AssertionError(f"celery -A {app_name}: {exc}") from exc
    celery_class = importlib.import_module("celery").Celery
    assert isinstance(app, celery_class), f"celery -A {app_name} finds {app!r}, not a Celery app"
    assert rest, "celery without a subcommand"
    subcommands = importlib.import_module("celery.bin.celery").celery.commands
    assert rest[0] in subcommands, f"celery has no subcommand {rest[0]!r}"
    # The subcommand's own (click) parser, with the context celery's CLI would give it: an unknown option or
    # a bad value (--pool bogus, --concurrency x) fails here as it would at start-up.
    cli_context = importlib.import_module("celery.bin.base").CLIContext(app=app, no_color=True, workdir=None)
    click = importlib.import_module("click")
    try:
        subcommands[rest[0]].make_context(rest[0], rest[1:], obj=cli_context)
    except click.ClickException as exc:
        raise AssertionError(f"celery {rest[0]} rejects {rest[1:]}: {exc.format_message()}") from exc


class Exec(Exception):
    """Raised by the fake os.exec* below: what a management command would have replaced itself with."""

    def __init__(self, argv: list[str], env: Mapping[str, str] | None) -> None:
        super().__init__(argv)
        self.argv, self.env = argv, dict(env) if env is not None else None


def exec_of(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> Exec:
    """Run `python manage.py <name> ...` in-process up to its os.execv/os.execve, and return that exec."""
    assert command[:2] == ["python", "manage.py"], command

    def fake_execv(path: str, args: list[str]) -> None:
        raise Exec(list(args), None)

    def fake_execve(path: str, args: list[str], env: Mapping[str, str]) -> None:
        raise Exec(list(args), env)

    monkeypatch.setattr(os, "execv", fake_execv)
    monkeypatch.setattr(os, "execve", fake_execve)
    with pytest.raises(Exec) as caught:
        call_command(*command[2:])
    return caught.value


def as_celery_command(exec_argv: list[str]) -> list[str]:
    """[python, -m, celery, ...] as the `celery ...` command line check_entry_point understands."""
    assert exec_argv[1:3] == ["-m", "celery"], exec_argv
    return ["celery", *exec_argv[3:]]


def option(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


# --- compose: shape ------------------------------------------------------------------------------


def test_expected_services_exist() -> None:
    assert set(services()) >= EXPECTED_SERVICES
    assert set(project_services()) >= PROJECT_SERVICES
    for name in ("postgres", "redis"):
        assert "build" not in services()[name], f"{name} should run the stock image"
    assert str(services()["postgres"]["image"]).startswith("postgres:16")
    assert str(services()["redis"]["image"]).startswith("redis:7")


def test_project_services_share_one_image() -> None:
    images = {services()[name].get("image") for name in project_services()}
    builds = {json.dumps(services()[name]["build"], sort_keys=True) for name in project_services()}
    assert len(images) == 1, f"one image for every taskhub process, got {images}"
    assert len(builds) == 1


@pytest.mark.parametrize("name", project_services())
def test_project_service_command_is_a_real_entry_point(name: str) -> None:
    service = services()[name]
    assert "command" in service, f"{name}: say which process it runs; the image default is only gunicorn"
    assert "entrypoint" not in service, f"{name}: an entrypoint would be prepended to the checked command"
    check_entry_point(argv(service["command"]))


@pytest.mark.parametrize(
    "command",
    [
        "python manage.py no_such_command",
        "python manage.py migrate --no-such-option",
        "python manage.py",
        "gunicorn taskhub.wsgi:no_such_attribute",
        "gunicorn no_such_module:application",
        "gunicorn taskhub.settings:DEBUG",
        f"gunicorn {WSGI_APP} --no-such-option",
        "celery -A no_such_module worker",
        "celery -A taskhub.no_such_module worker",
        "celery -A taskhub no_such_subcommand",
        "celery -A taskhub worker --pool bogus",
        "celery -A taskhub worker --no-such-option",
        "python manage.py run_node",
        "python manage.py run_node node1 --no-such-option",
        "python manage.py run_node node1 --concurrency many",
        "python -m workers",
        "python -m workers node1 --no-such-option",
        "python -m workers 'bad name'",
        "python manage.py run_scheduler --beat",
        "celery worker",
        "sh -c 'sleep infinity'",
    ],
)
def test_entry_point_check_rejects_what_would_crash(command: str) -> None:
    with pytest.raises(AssertionError):
        check_entry_point(shlex.split(command))


@pytest.mark.parametrize(
    "command",
    [
        f"gunicorn {WSGI_APP} --bind 0.0.0.0:8000 --workers 3",
        "python manage.py run_writer --batch-size 500",
        "python manage.py migrate --noinput",
        "celery -A taskhub worker -l INFO",
        "celery --app taskhub beat",
        "python manage.py run_scheduler --loglevel WARNING",
        "python manage.py run_node node7 --data-dir /data --concurrency 8 --capacity-blocks 64",
        "python -m workers node7 --data-dir /tmp/node7 --concurrency 8 --capacity-blocks 64",
    ],
)
def test_entry_point_check_accepts_real_commands(command: str) -> None:
    check_entry_point(shlex.split(command))


@pytest.mark.parametrize("name", sorted(LONG_RUNNING_WITH_HEALTHCHECK))
def test_long_running_services_have_a_healthcheck(name: str) -> None:
    healthcheck = services()[name].get("healthcheck")
    assert healthcheck, f"{name} has no healthcheck"
    assert not healthcheck.get("disable", False)
    test = healthcheck["test"]
    assert isinstance(test, list), "exec-form healthcheck, so no shell quoting surprises"
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
    assert services()[name].get("restart") in ("unless-stopped", "always")


def test_healthchecks_probe_the_right_thing() -> None:
    assert "pg_isready" in services()["postgres"]["healthcheck"]["test"]
    assert "redis-cli ping" in " ".join(services()["redis"]["healthcheck"]["test"])
    web = " ".join(services()["web"]["healthcheck"]["test"][1:])
    assert "curl" not in web and "wget" not in web, "python:3.11-slim has neither curl nor wget"
    assert "urllib" in web
    assert re.search(r"http://(127\.0\.0\.1|localhost):8000/healthz\b", web)


def test_web_healthcheck_host_is_allowed_whatever_the_operator_sets() -> None:
    """Django answers 400 to a Host outside ALLOWED_HOSTS, which would make the healthcheck fail forever."""
    url = re.search(r"https?://[^'\"\s]+", " ".join(services()["web"]["healthcheck"]["test"]))
    assert url
    host = urlsplit(url[0]).hostname
    for operator_env in (OPERATOR_ENV, {k: v for k, v in OPERATOR_ENV.items() if k != "ALLOWED_HOSTS"}):
        allowed = interpolate(environment(services()["web"])["ALLOWED_HOSTS"], operator_env).split(",")
        assert host in allowed, f"ALLOWED_HOSTS={allowed} leaves out {host}"


def test_web_listens_where_ports_and_healthcheck_expect() -> None:
    web = services()["web"]
    options = gunicorn_options(argv(web["command"])[1:])
    assert options.bind == ["0.0.0.0:8000"], "outside the container's loopback, or the published port is dead"
    container_ports = {str(port).rsplit(":", 1)[-1] for port in web.get("ports", [])}
    assert container_ports == {"8000"}
    assert "WEB_CONCURRENCY" in environment(web), "workers come from the environment"


@pytest.mark.parametrize("name", ["web", "writer", "scheduler"])
def test_app_waits_for_healthy_backends_and_migrations(name: str) -> None:
    depends_on = services()[name].get("depends_on")
    assert isinstance(depends_on, dict), "the long form, with conditions"
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_migrate_is_one_shot() -> None:
    migrate = services()["migrate"]
    assert argv(migrate["command"])[:3] == ["python", "manage.py", "migrate"]
    assert "--noinput" in argv(migrate["command"]), "nobody is there to answer a prompt"
    # A restart policy would re-run it forever and `service_completed_successfully` would never hold.
    assert migrate.get("restart", "no") == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_writer_scales() -> None:
    writer = services()["writer"]
    assert argv(writer["command"])[:3] == ["python", "manage.py", "run_writer"]
    assert "container_name" not in writer, "a fixed container name allows one replica only"
    assert not writer.get("ports"), "a published host port allows one replica only"
    assert int(writer["deploy"]["replicas"]) >= 2


def test_scheduler_runs_exactly_once() -> None:
    """Two Celery beats would each schedule every sweep; compose must neither start nor scale a second one."""
    scheduler = services()["scheduler"]
    assert argv(scheduler["command"])[:3] == ["python", "manage.py", "run_scheduler"]
    assert int(scheduler.get("deploy", {}).get("replicas", 1)) == 1
    # A fixed container name is what makes `docker compose up --scale scheduler=2` an error.
    assert scheduler.get("container_name"), "without a fixed container_name, --scale could start a second beat"
    others = [name for name in project_services() if name != "scheduler"]
    assert all(argv(services()[name]["command"])[2:3] != ["run_scheduler"] for name in others)


def test_scheduler_runs_beat_and_the_server_queue_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """What run_scheduler execs: one celery worker with an embedded beat, on the server queue."""
    execed = exec_of(monkeypatch, argv(services()["scheduler"]["command"]))
    command = as_celery_command(execed.argv)
    check_entry_point(command)
    assert "worker" in command and "--beat" in command
    assert option(command, "--queues") == SERVER_QUEUE


def test_nodes_exist_and_have_distinct_valid_names() -> None:
    assert set(node_services()) == NODE_SERVICES
    names = [argv(services()[name]["command"])[3] for name in node_services()]
    assert len(set(names)) == len(names), f"two services run the same node: {names}"
    for name in names:
        assert NAME_RE.fullmatch(name), f"run_node refuses the node name {name!r}"


@pytest.mark.parametrize("name", sorted(NODE_SERVICES))
def test_node_worker_consumes_its_own_queue(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `python -m workers` execs: a celery worker on queue node.<name>, told its name and data
    directory, under the node's settings (no database)."""
    from workers.__main__ import NODE_SETTINGS, build

    command = argv(services()[name]["command"])
    assert command[:4] == ["python", "-m", "workers", name]
    assert option(command, "--data-dir") == NODE_DATA_DIR
    monkeypatch.setattr(Path, "mkdir", lambda self, *args, **kwargs: None)  # /data exists only in the image
    celery_argv, env = build(command[3:])
    celery_command = as_celery_command(celery_argv)
    check_entry_point(celery_command)
    assert option(celery_command, "--queues") == node_queue(name)
    assert env["TASKHUB_NODE_NAME"] == name
    assert env["TASKHUB_NODE_DATA_DIR"] == NODE_DATA_DIR
    assert env["DJANGO_SETTINGS_MODULE"] == NODE_SETTINGS


@pytest.mark.parametrize("name", sorted(NODE_SERVICES))
def test_node_never_gets_the_database(name: str) -> None:
    """A node reports through the update stream only; its environment has the broker and the stream."""
    node = services()[name]
    env = environment(node)
    assert "DATABASE_URL" not in env, f"{name}: a node never opens the database"
    assert "SECRET_KEY" not in env and "POSTGRES_PASSWORD" not in env, f"{name}: a node needs no secrets"
    shared = {key: str(value) for key, value in compose()["x-env"].items()}
    assert env.get("REDIS_URL") == shared["REDIS_URL"], f"{name}: not the broker and stream everybody else uses"
    if "CELERY_BROKER_URL" in env:
        assert env["CELERY_BROKER_URL"] == shared["REDIS_URL"]
    # Nodes append to shard crc32(id) % TASKHUB_STREAM_SHARDS: a different count writes where no writer reads.
    for key in ("TASKHUB_STREAM_SHARDS", "TASKHUB_STREAM_PREFIX"):
        assert env.get(key) == shared.get(key), f"{name}: {key} differs from the writers'"
    depends_on = node.get("depends_on")
    assert isinstance(depends_on, dict), "the long form, with conditions"
    assert set(depends_on) == {"redis"}, f"{name}: a node needs only Redis, not {sorted(depends_on)}"
    assert depends_on["redis"]["condition"] == "service_healthy"
    # A node's name is its identity (its queue, its data): one container each.
    assert int(node.get("deploy", {}).get("replicas", 1)) == 1
    assert not node.get("ports")


def test_each_node_keeps_its_data_in_a_named_volume_of_its_own() -> None:
    volumes = compose().get("volumes") or {}
    sources = []
    for name in node_services():
        pairs = (str(v).split(":")[:2] for v in services()[name].get("volumes", []))
        mounts = {target: source for source, target in pairs}
        assert mounts.get(NODE_DATA_DIR) in volumes, f"{name}: {NODE_DATA_DIR} is not a named volume"
        sources.append(mounts[NODE_DATA_DIR])
    assert len(set(sources)) == len(sources), f"nodes share a data volume: {sources}"


def test_image_prepares_the_node_data_dir_for_its_user() -> None:
    """A new named volume takes the owner of the image's directory; without one it would be root's."""
    runs = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "RUN")
    user = [args for keyword, args in dockerfile_instructions() if keyword == "USER"][-1].split(":")[0]
    assert re.search(rf"mkdir -p [^&;]*{NODE_DATA_DIR}\b", runs), f"the image has no {NODE_DATA_DIR}"
    chown = re.search(rf"chown (\S+) [^&;]*{NODE_DATA_DIR}\b", runs)
    assert chown, f"{NODE_DATA_DIR} is not given to the app user"
    owner = chown[1].split(":")[0]
    assert owner == user or re.search(rf"useradd [^&;]*--uid {user}\b[^&;]* {owner}\b", runs), (
        f"{NODE_DATA_DIR} belongs to {owner}, the container runs as {user}"
    )


def _healthcheck(name: str) -> tuple[str, list[str]]:
    """A node's healthcheck as (the `python -c` code, its sys.argv[1:])."""
    test = [str(part) for part in services()[name]["healthcheck"]["test"]]
    assert test[0] == "CMD" and Path(test[1]).name.startswith("python") and test[2] == "-c", test
    return test[3], test[4:]


def _settings_default(variable: str) -> str:
    pattern = rf'\b{variable} = env\.str\("{variable}", default="([^"]*)"\)'
    found = re.search(pattern, SHARED_SETTINGS_FILE.read_text())
    assert found, f"settings.py no longer reads {variable} the way the node healthcheck mirrors"
    return found[1]


def _run_healthcheck(name: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """The healthcheck's exit status, run in-process against the Redis in REDIS_URL."""
    code, args = _healthcheck(name)
    monkeypatch.setattr(sys, "argv", ["-c", *args])
    with pytest.raises(SystemExit) as exited:
        exec(compile(code, "<healthcheck>", "exec"), {})  # noqa: S102  # the compose file's own code
    return int(exited.value.code or 0)


@pytest.mark.redis
@pytest.mark.parametrize("name", sorted(NODE_SERVICES))
@pytest.mark.parametrize("prefix", [None, "elsewhere"])
def test_node_healthcheck_probes_its_own_heartbeat_key(
    name: str, prefix: str | None, monkeypatch: pytest.MonkeyPatch, redis_stream: redis.Redis, settings: Any
) -> None:
    """Healthy exactly when the key workers/node/heartbeat.py keeps alive for this node exists, under the
    node's TASKHUB_STREAM_PREFIX (the default when it has none), in the Redis of its REDIS_URL."""
    node_name = argv(services()[name]["command"])[3]
    assert _healthcheck(name)[1] == [node_name], "the healthcheck must probe the node this service runs"
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    if prefix is None:
        monkeypatch.delenv("TASKHUB_STREAM_PREFIX", raising=False)
        used = _settings_default("TASKHUB_STREAM_PREFIX")
    else:
        used = f"{settings.TASKHUB_STREAM_PREFIX}:{prefix}"  # under this test's own prefix: cleaned up after
        monkeypatch.setenv("TASKHUB_STREAM_PREFIX", used)
    with override_settings(TASKHUB_STREAM_PREFIX=used):
        key = keys.alive_key(node_name)
        other = keys.alive_key(f"not-{node_name}-{uuid.uuid4().hex[:6]}")
    try:
        assert _run_healthcheck(name, monkeypatch) != 0, "healthy without its key"
        redis_stream.set(other, "1", ex=60)
        assert _run_healthcheck(name, monkeypatch) != 0, "healthy on another node's key"
        redis_stream.set(key, "1", ex=60)
        assert _run_healthcheck(name, monkeypatch) == 0, "unhealthy with its own key"
    finally:
        redis_stream.delete(key, other)


@pytest.mark.redis
def test_node_healthcheck_against_a_real_heartbeat(redis_stream: redis.Redis, settings: Any) -> None:
    """End to end, in a child process as Docker runs it: healthy while the node beats, not once it stops."""
    name = node_services()[0]
    node_name = argv(services()[name]["command"])[3]
    code, args = _healthcheck(name)
    env = dict(os.environ, REDIS_URL=TEST_REDIS_URL, TASKHUB_STREAM_PREFIX=settings.TASKHUB_STREAM_PREFIX)

    def healthcheck() -> int:
        return subprocess.run([sys.executable, "-c", code, *args], env=env, timeout=30, check=False).returncode

    assert healthcheck() != 0, "healthy before the node ever beat"
    heartbeat.beat(node_name, {"data_dir": NODE_DATA_DIR})
    assert healthcheck() == 0
    heartbeat.forget(node_name)
    assert healthcheck() != 0
    down = dict(env, REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert subprocess.run([sys.executable, "-c", code, *args], env=down, timeout=30, check=False).returncode != 0


def test_state_lives_in_named_volumes() -> None:
    volumes = compose().get("volumes") or {}

    def mounts(name: str) -> dict[str, str]:
        pairs = (str(v).split(":")[:2] for v in services()[name].get("volumes", []))
        return {target: source for source, target in pairs}

    pg = mounts("postgres")
    assert pg.get("/var/lib/postgresql/data") in volumes
    assert mounts("redis").get("/data") in volumes


def test_redis_keeps_accepted_updates_across_restarts() -> None:
    command = " ".join(argv(services()["redis"]["command"]))
    assert "--appendonly yes" in command, "without the AOF, queued updates die with the container"
    assert "--maxmemory-policy noeviction" in command, "an evicting policy could drop queued updates"


# --- compose: environment -----------------------------------------------------------------------


def test_app_services_share_one_environment() -> None:
    """Every server-side process; node workers and Flower get only the broker (test_node_never_gets_the_database)."""
    shared = compose()["x-env"]
    for name in sorted(set(project_services()) - set(node_services()) - {"flower"}):
        env = environment(services()[name])
        for key, value in shared.items():
            assert env.get(key) == str(value), f"{name}: {key} differs from x-env"


def test_database_url_matches_the_postgres_service() -> None:
    pg_env = {k: interpolate(v, OPERATOR_ENV) for k, v in environment(services()["postgres"]).items()}
    url = interpolate(str(compose()["x-env"]["DATABASE_URL"]), OPERATOR_ENV)
    db = environ.Env.db_url_config(url)
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["HOST"], int(db["PORT"])) == ("postgres", 5432)
    assert db["USER"] == pg_env["POSTGRES_USER"]
    assert db["PASSWORD"] == pg_env["POSTGRES_PASSWORD"]
    assert db["NAME"] == pg_env["POSTGRES_DB"]


def test_redis_url_points_at_the_redis_service() -> None:
    url = urlsplit(interpolate(str(compose()["x-env"]["REDIS_URL"]), OPERATOR_ENV))
    assert (url.scheme, url.hostname, url.port or 6379) == ("redis", "redis", 6379)


@pytest.mark.parametrize("variable", ["SECRET_KEY", "POSTGRES_PASSWORD"])
def test_secrets_must_be_supplied(variable: str) -> None:
    """No silent fallback: settings.py's dev SECRET_KEY is public, and a default password is no password."""
    env = {k: v for k, v in OPERATOR_ENV.items() if k != variable}
    values = [str(v) for v in compose()["x-env"].values()]
    values += list(environment(services()["postgres"]).values())
    refusals = []
    for value in values:
        try:
            interpolate(value, env)
        except LookupError as exc:
            refusals.append(str(exc))
    assert any(refusal.startswith(f"{variable}:") for refusal in refusals), f"{variable} has a silent default"


def test_production_defaults() -> None:
    env = {k: interpolate(str(v), OPERATOR_ENV) for k, v in compose()["x-env"].items()}
    assert environ.Env.parse_value(env["DEBUG"], bool) is False


def _readers_source() -> str:
    return (
        SETTINGS_FILE.read_text()
        + SHARED_SETTINGS_FILE.read_text()
        + NODE_ENTRY.read_text()
        + GUNICORN_CONF.read_text()
    )


# Read by programs other than Django and gunicorn.conf.py.
NOT_SETTINGS = re.compile(r"^(PYTHON\w*|PIP_\w+|POSTGRES_(USER|PASSWORD|DB))$")


@pytest.mark.parametrize("name", project_services())
def test_every_app_variable_is_read_by_something(name: str) -> None:
    """A misspelt variable (TASKHUB_STREAM_SHARD=16) is silently ignored; this catches it."""
    source = _readers_source()
    for variable in environment(services()[name]):
        if NOT_SETTINGS.match(variable):
            continue
        assert re.search(rf"[\"']{re.escape(variable)}[\"']", source), f"{name}: nothing reads {variable}"


def test_every_dockerfile_variable_is_read_by_something() -> None:
    source = _readers_source()
    for keyword, args in dockerfile_instructions():
        if keyword != "ENV":
            continue
        for variable in re.findall(r"(\w+)=", args):
            if not NOT_SETTINGS.match(variable):
                assert re.search(rf"[\"']{re.escape(variable)}[\"']", source), f"nothing reads {variable}"


def test_gunicorn_conf_sets_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    known = set(importlib.import_module("gunicorn.config").Config().settings)
    for variable in ("WEB_CONCURRENCY", "GUNICORN_BIND", "GUNICORN_THREADS", "GUNICORN_TIMEOUT"):
        monkeypatch.delenv(variable, raising=False)
    namespace = runpy.run_path(str(GUNICORN_CONF))
    names = {k for k, v in namespace.items() if not k.startswith("_") and not inspect.ismodule(v)}
    assert names, "gunicorn.conf.py sets nothing"
    assert names <= known, f"not gunicorn settings: {sorted(names - known)}"
    assert namespace["bind"] == "0.0.0.0:8000"
    assert isinstance(namespace["workers"], int) and namespace["workers"] >= 1


def test_gunicorn_conf_reads_workers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "7")
    assert runpy.run_path(str(GUNICORN_CONF))["workers"] == 7


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_default_command_is_gunicorn() -> None:
    entrypoint = dockerfile_argv("ENTRYPOINT")
    command = entrypoint + dockerfile_argv("CMD")
    assert not entrypoint, "an ENTRYPOINT would be prepended to every compose `command`"
    assert command[:2] == ["gunicorn", WSGI_APP]
    check_entry_point(command)
    assert argv(services()["web"]["command"])[:2] == command[:2], "compose web runs the image's app"


def test_dockerfile_base_and_user() -> None:
    instructions = dockerfile_instructions()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms and froms[0].split()[0] == "python:3.11-slim"
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "USER")
    assert all(keyword not in ("RUN", "COPY", "ADD") for keyword, _ in instructions[last_user:]), (
        "build steps after USER would run as the app user; keep USER last"
    )


def test_dockerfile_installs_pinned_requirements_and_collects_static() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    assert any(re.search(r"pip install .*-r requirements\.txt", run) for run in runs)
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            assert "==" in requirement, f"requirements.txt: {requirement} is not pinned"
    collect = [run for run in runs if "manage.py collectstatic" in run]
    assert collect and "--noinput" in collect[0]
    env = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "ENV")
    assert re.search(r"\bSTATIC_ROOT=/\S+", env), "collect into a fixed path inside the image, not var/"


def test_dockerignore_keeps_local_state_out_and_needed_files_in() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "var", "*.sqlite3", ".env"} <= patterns
    copied = {"requirements.txt", "manage.py", "gunicorn.conf.py", "taskhub", "tasks_app"}
    assert not copied & patterns, f"the image needs {sorted(copied & patterns)}"


def test_flower_watches_the_broker_only_and_asks_for_a_password() -> None:
    flower = services()["flower"]
    assert "DATABASE_URL" not in environment(flower)
    command = argv(flower["command"])
    check_entry_point(command)
    assert any(part.startswith("--basic-auth=") for part in command)
