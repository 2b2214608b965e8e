"""`manage.py check --deploy` flags the public dev key and a wildcard host; var/ and the secrets in it are
readable by their owner only."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.checks import ERROR, WARNING, CheckMessage, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper

from taskhub import private_files
from tasks_app.management.commands.run_stack import Command as RunStack


def deploy_messages(wanted: str) -> list[CheckMessage]:
    return [m for m in run_checks(include_deployment_checks=True) if m.id == wanted]


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- the checks -------------------------------------------------------------------------------------


def test_the_public_dev_key_is_an_error_with_a_hint(settings: Any) -> None:
    settings.SECRET_KEY = settings.DEV_SECRET_KEY
    [found] = deploy_messages("taskhub.E001")
    assert found.level == ERROR
    assert "public development key" in found.msg and found.msg.startswith("SECRET_KEY ")
    assert found.hint is not None and "set secret_key in the environment" in found.hint.lower()
    with pytest.raises(SystemCheckError, match=r"taskhub\.E001"):
        call_command("check", "--deploy")


def test_a_real_key_passes_unless_the_public_one_is_still_a_fallback(settings: Any) -> None:
    settings.SECRET_KEY = secrets.token_urlsafe(50)
    settings.SECRET_KEY_FALLBACKS = []
    assert deploy_messages("taskhub.E001") == []
    settings.SECRET_KEY_FALLBACKS = [settings.DEV_SECRET_KEY]
    [found] = deploy_messages("taskhub.E001")
    assert found.msg.startswith("SECRET_KEY_FALLBACKS holds")


def test_the_checks_run_with_deploy_only(settings: Any) -> None:
    settings.SECRET_KEY = settings.DEV_SECRET_KEY
    settings.ALLOWED_HOSTS = ["*"]
    assert not {"taskhub.E001", "taskhub.W001"} & {m.id for m in run_checks()}


def test_a_wildcard_host_is_a_warning_that_says_why(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["taskhub.example.com", "*"]
    [found] = deploy_messages("taskhub.W001")
    assert found.level == WARNING
    assert "Host header" in found.msg and "password-reset" in found.msg
    assert found.hint is not None and "ALLOWED_HOSTS" in found.hint
    settings.ALLOWED_HOSTS = ["taskhub.example.com", ".example.org"]
    assert deploy_messages("taskhub.W001") == []


# --- file modes -------------------------------------------------------------------------------------


def test_var_dir_is_private(settings: Any) -> None:
    if "TASKHUB_VAR_DIR" in os.environ:
        pytest.skip("TASKHUB_VAR_DIR names a directory of the operator's, which keeps its own mode")
    assert mode(settings.VAR_DIR) == 0o700


def test_a_new_var_dir_is_0700_and_only_ours_is_tightened(tmp_path: Path) -> None:
    new = tmp_path / "a" / "var"
    private_files.make_private_dir(new, tighten_existing=False)
    assert mode(new) == 0o700
    old = tmp_path / "old-var"
    old.mkdir()
    old.chmod(0o755)
    private_files.make_private_dir(old, tighten_existing=False)
    assert mode(old) == 0o755  # named by the operator: left as it is
    private_files.make_private_dir(old, tighten_existing=True)
    assert mode(old) == 0o700


def test_a_secret_is_written_0600_even_over_a_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    private_files.write_private(path, "one\n")
    assert (mode(path), path.read_text()) == (0o600, "one\n")
    path.chmod(0o644)
    private_files.write_private(path, "two\n")
    assert (mode(path), path.read_text()) == (0o600, "two\n")


@pytest.mark.django_db
def test_run_stack_writes_the_dev_admin_password_0600(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.VAR_DIR = tmp_path
    monkeypatch.setenv("TASKHUB_ADMIN_USER", "deploy-check-admin")
    monkeypatch.setenv("TASKHUB_ADMIN_PASSWORD", "deploy-check-password")
    assert RunStack()._admin_login() == ("deploy-check-admin", "deploy-check-password")
    pw_file = tmp_path / "admin-password"
    assert (mode(pw_file), pw_file.read_text()) == (0o600, "deploy-check-password\n")
    user = get_user_model()._default_manager.get_by_natural_key("deploy-check-admin")
    assert user.check_password("deploy-check-password") and user.is_superuser


@pytest.mark.django_db
def test_the_sqlite_test_database_is_0600() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL keeps its own files")
    connection.ensure_connection()
    name = str(connection.settings_dict["NAME"])
    assert mode(name) == 0o600
    for suffix in ("-wal", "-shm"):
        if os.path.exists(name + suffix):
            assert mode(name + suffix) == 0o600


@pytest.mark.django_db
def test_every_sqlite_connection_makes_its_files_0600(tmp_path: Path) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL keeps its own files")
    path = tmp_path / "other.sqlite3"
    other = SQLiteWrapper({**connection.settings_dict, "NAME": str(path)}, alias="deploy-checks-other")
    try:
        with other.cursor() as cursor:  # WAL, as configured: the -wal and -shm files appear with the first write
            cursor.execute("CREATE TABLE t (x INTEGER)")
            cursor.execute("INSERT INTO t VALUES (1)")
        assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
            "other.sqlite3": 0o600,
            "other.sqlite3-wal": 0o600,
            "other.sqlite3-shm": 0o600,
        }
        other.close()
        path.chmod(0o644)  # as an older version left it
        other.ensure_connection()
        assert mode(path) == 0o600
    finally:
        other.close()
