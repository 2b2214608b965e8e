"""docker-compose.yml, the Dockerfile and gunicorn.conf.py, checked against the code they start.

No Docker and no database: the files are parsed, and every command a container would run is resolved the way
its program would resolve it (Django's command registry, gunicorn's own option parser and app loader, Celery's
app finder), so a renamed command, module or setting fails here instead of in a crash-looping container.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import runpy
import shlex
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
import pytest
import yaml
from django.core.management import get_commands, load_command_class
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
GUNICORN_CONF = ROOT / "gunicorn.conf.py"
SETTINGS_FILE = ROOT / "taskhub" / "settings.py"

EXPECTED_SERVICES = {"postgres", "redis", "migrate", "web", "writer"}
PROJECT_SERVICES = {"migrate", "web", "writer"}  # the ones that run the image the Dockerfile builds
LONG_RUNNING_WITH_HEALTHCHECK = {"postgres", "redis", "web"}
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
        # For the Celery services still to come (beat scheduler, node workers).
        "celery -A taskhub worker -l INFO",
        "celery --app taskhub beat",
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


@pytest.mark.parametrize("name", ["web", "writer"])
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
    shared = compose()["x-env"]
    for name in project_services():
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
    return SETTINGS_FILE.read_text() + GUNICORN_CONF.read_text()


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
