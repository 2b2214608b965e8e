"""Password guessing (README "Access control"): django-axes on every password login: the admin,
/api-auth/login/ and POST /api/v1/auth/token/. Failures count per user name and per client address,
in the database (axes' AccessAttempt rows, asserted on here).

REMOTE_ADDR on the test client is only a header value: nothing goes over a network.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from axes.models import AccessAttempt  # type: ignore[import-untyped]
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.db.models import Sum
from django.test import Client
from django.utils import timezone
from pytest_django.live_server_helper import LiveServer
from rest_framework.authtoken.models import Token
from typer.testing import CliRunner

from cli.main import app

pytestmark = pytest.mark.django_db

LIMIT = 3
HERE = "10.0.0.1"
THERE = "10.0.0.2"
PASSWORD = "right-pw-for-tests"
OK, WRONG, LOCKED = "ok", "wrong", "locked"


@pytest.fixture(autouse=True)
def lockout_settings(settings: Any) -> Iterator[None]:
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.TASKHUB_LOGIN_RATE = "1000/min"  # the token endpoint's throttle stays out of the way
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; not what is tested
    cache.clear()  # the throttle's counts, per process
    yield
    cache.clear()


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password=PASSWORD, is_staff=True)  # staff: the admin too


@pytest.fixture
def bob() -> User:
    return User.objects.create_user("bob", password=PASSWORD, is_staff=True)


def lockout_message() -> str:
    from django.conf import settings

    return str(settings.AXES_COOLOFF_MESSAGE)


@dataclass(frozen=True)
class EntryPoint:
    name: str
    login: Callable[[Client, str, str], Any]
    outcome: Callable[[Client, Any, str], str]

    def attempt(self, username: str, password: str, address: str = HERE, **headers: Any) -> str:
        client = Client(REMOTE_ADDR=address, **headers)
        return self.outcome(client, self.login(client, username, password), username)


def _session_outcome(wrong_text: bytes) -> Callable[[Client, Any, str], str]:
    def outcome(client: Client, resp: Any, username: str) -> str:
        if resp.status_code == 302:
            assert client.session.get("_auth_user_id") == str(User.objects.get(username=username).pk)
            return OK
        assert "_auth_user_id" not in client.session
        if resp.status_code == 200 and wrong_text in resp.content:
            return WRONG
        if resp.status_code == 429 and resp.content.decode() == lockout_message():
            return LOCKED
        raise AssertionError(f"unexpected answer {resp.status_code}: {resp.content[:300]!r}")

    return outcome


def _token_outcome(client: Client, resp: Any, username: str) -> str:
    assert resp["Content-Type"] == "application/json"
    body = resp.json()
    if resp.status_code == 200:
        assert body == {"token": Token.objects.get(user__username=username).key}
        return OK
    if resp.status_code == 400 and body == {"non_field_errors": ["Unable to log in with provided credentials."]}:
        return WRONG
    if resp.status_code == 429 and body == {"detail": lockout_message()}:
        return LOCKED
    raise AssertionError(f"unexpected answer {resp.status_code}: {body!r}")


ADMIN = EntryPoint(
    "admin",
    lambda c, u, p: c.post("/admin/login/", {"username": u, "password": p, "next": "/admin/"}),
    _session_outcome(b"Please enter the correct username and password for a staff account"),
)
API_AUTH = EntryPoint(
    "api-auth",
    lambda c, u, p: c.post("/api-auth/login/", {"username": u, "password": p}),
    _session_outcome(b"Please enter a correct username and password"),
)
TOKEN = EntryPoint(
    "token",
    lambda c, u, p: c.post(
        "/api/v1/auth/token/", json.dumps({"username": u, "password": p}), content_type="application/json"
    ),
    _token_outcome,
)
ENTRY_POINTS = [ADMIN, API_AUTH, TOKEN]
every_entry_point = pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[e.name for e in ENTRY_POINTS])


def failures(**match: str) -> int:
    return int(AccessAttempt.objects.filter(**match).aggregate(n=Sum("failures_since_start"))["n"] or 0)


@every_entry_point
def test_wrong_passwords_lock_the_user_out_even_with_the_right_one_from_elsewhere(
    entry: EntryPoint, alice: User, bob: User
) -> None:
    assert [entry.attempt("alice", f"guess-{i}") for i in range(LIMIT)] == [WRONG] * (LIMIT - 1) + [LOCKED]
    assert failures(username="alice", ip_address=HERE) == LIMIT
    assert entry.attempt("alice", PASSWORD) == LOCKED
    assert entry.attempt("alice", PASSWORD, address=THERE) == LOCKED
    assert failures(username="alice", ip_address=THERE) == 1  # a try while locked out counts too
    # The user name is locked, not the other address: bob logs in from there.
    assert entry.attempt("bob", PASSWORD, address=THERE) == OK


@every_entry_point
def test_wrong_passwords_from_one_address_for_different_users_lock_that_address(
    entry: EntryPoint, alice: User, bob: User
) -> None:
    names = ["carol", "dave", "bob"][:LIMIT]  # user names that exist or not: both count
    assert [entry.attempt(name, "guess") for name in names] == [WRONG] * (LIMIT - 1) + [LOCKED]
    assert failures(ip_address=HERE) == LIMIT
    assert entry.attempt("alice", PASSWORD) == LOCKED  # alice never failed, but her address is locked
    assert entry.attempt("alice", PASSWORD, address=THERE) == OK


@every_entry_point
def test_a_correct_login_forgets_the_users_failures(entry: EntryPoint, alice: User) -> None:
    assert [entry.attempt("alice", "guess") for _ in range(LIMIT - 1)] == [WRONG] * (LIMIT - 1)
    assert entry.attempt("alice", PASSWORD) == OK
    assert not AccessAttempt.objects.filter(username="alice").exists()
    assert [entry.attempt("alice", "guess") for _ in range(LIMIT - 1)] == [WRONG] * (LIMIT - 1)
    assert entry.attempt("alice", PASSWORD) == OK


@every_entry_point
def test_logging_in_to_ones_own_account_does_not_forget_guesses_at_others(
    entry: EntryPoint, alice: User, bob: User
) -> None:
    # Axes' stock reset on success would forget everything from the address: a guesser with one account
    # could then guess forever, logging in every LIMIT - 1 guesses.
    assert [entry.attempt("alice", "guess") for _ in range(LIMIT - 1)] == [WRONG] * (LIMIT - 1)
    assert entry.attempt("bob", PASSWORD) == OK
    assert failures(username="alice", ip_address=HERE) == LIMIT - 1
    assert entry.attempt("alice", "guess") == LOCKED


def test_the_token_endpoints_lockout_is_a_429_in_json_with_retry_after(alice: User, settings: Any) -> None:
    for _ in range(LIMIT):
        TOKEN.login(Client(), "alice", "guess")
    resp = TOKEN.login(Client(), "alice", PASSWORD)
    assert resp.status_code == 429 and resp["Content-Type"] == "application/json"
    assert resp.json() == {
        "detail": "Too many failed logins for this user or from this address: try again in 15 minutes,"
        " or ask an operator to unlock it."
    }
    assert resp["Retry-After"] == str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    # With no cool-off, the lock lasts until an operator lifts it, and says so.
    settings.AXES_COOLOFF_TIME = None
    resp = TOKEN.login(Client(), "alice", PASSWORD)
    assert resp.status_code == 429 and "Retry-After" not in resp
    assert resp.json() == {"detail": settings.AXES_PERMALOCK_MESSAGE}
    assert "ask an operator to unlock it" in resp.json()["detail"]


@every_entry_point
def test_axes_reset_username_unlocks_the_user(entry: EntryPoint, alice: User) -> None:
    for _ in range(LIMIT):
        entry.attempt("alice", "guess")
    assert entry.attempt("alice", PASSWORD) == LOCKED
    out = StringIO()
    call_command("axes_reset_username", "alice", stdout=out)
    assert out.getvalue().strip() == "1 attempts removed." and failures(username="alice") == 0
    assert entry.attempt("alice", PASSWORD) == OK


def test_axes_reset_ip_and_axes_reset_unlock_an_address(alice: User) -> None:
    for name in ["x", "y", "z"][:LIMIT]:
        TOKEN.attempt(name, "guess")
    assert TOKEN.attempt("alice", PASSWORD) == LOCKED
    out = StringIO()
    call_command("axes_reset_ip", HERE, stdout=out)
    assert out.getvalue().strip() == f"{LIMIT + 1} attempts removed." and failures(ip_address=HERE) == 0
    assert TOKEN.attempt("alice", PASSWORD) == OK
    for name in ["x", "y", "z"][:LIMIT]:
        TOKEN.attempt(name, "guess")
    call_command("axes_reset", stdout=StringIO())
    assert not AccessAttempt.objects.exists()
    assert TOKEN.attempt("alice", PASSWORD) == OK


def test_the_lockout_ends_after_the_cool_off(alice: User, settings: Any) -> None:
    for _ in range(LIMIT):
        TOKEN.attempt("alice", "guess")
    assert TOKEN.attempt("alice", PASSWORD) == LOCKED
    # The last failure was longer ago than the cool-off (moved back in the stored rows, no clock faked).
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert TOKEN.attempt("alice", PASSWORD) == OK


def test_the_address_is_the_one_taskhub_trusts(alice: User, settings: Any) -> None:
    # No trusted proxies: a forged X-Forwarded-For does not move a guesser into a fresh bucket; the
    # guesses count against REMOTE_ADDR, the TCP peer.
    for i in range(LIMIT):
        TOKEN.attempt(f"user{i}", "guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {HERE}
    assert TOKEN.attempt("alice", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.99") == LOCKED
    call_command("axes_reset", stdout=StringIO())
    # One trusted proxy (REMOTE_ADDR): the client is the address it appended, so clients behind the
    # same proxy have buckets of their own.
    settings.TASKHUB_TRUSTED_PROXY_COUNT = 1
    for i in range(LIMIT):
        TOKEN.attempt(f"user{i}", "guess", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.7")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.7"}
    assert TOKEN.attempt("alice", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.7") == LOCKED
    assert TOKEN.attempt("alice", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.8") == OK
    # An entry that is not an address (the proxy's business) falls back to the peer, never to an error.
    assert TOKEN.attempt("nobody", "guess", HTTP_X_FORWARDED_FOR="unknown") == WRONG
    assert AccessAttempt.objects.filter(username="nobody", ip_address=HERE).exists()


def test_tokens_and_force_login_are_never_refused(alice: User, api_client: Client) -> None:
    # The suite's other ways in check no password: a locked-out user's token still works and does not
    # count, and force_login (a login, like the admin's after a correct password) forgets the failures.
    for _ in range(LIMIT):
        TOKEN.attempt("alice", "guess")
    token = Token.objects.create(user=alice)
    assert Client(REMOTE_ADDR=HERE, HTTP_AUTHORIZATION=f"Token {token.key}").get("/api/v1/").status_code == 200
    assert api_client.get("/api/v1/").status_code == 200
    assert failures(username="alice") == LIMIT
    client = Client(REMOTE_ADDR=HERE)
    client.force_login(alice)
    assert client.get("/api/v1/").status_code == 200
    assert failures(username="alice") == 0


@pytest.mark.django_db(transaction=True)  # live_server serves from its own thread: rows must be committed
def test_taskhub_login_shows_the_lockout(
    live_server: LiveServer, alice: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TASKHUB_TOKEN", raising=False)
    monkeypatch.delenv("TASKHUB_URL", raising=False)
    runs = [
        CliRunner().invoke(app, ["login", "--url", live_server.url], input=f"alice\n{pw}\n", env={"COLUMNS": "300"})
        for pw in ["guess"] * LIMIT + [PASSWORD]
    ]
    assert [r.exit_code for r in runs] == [1] * (LIMIT + 1)
    assert "Unable to log in" in runs[0].stderr
    assert lockout_message() in runs[LIMIT - 1].stderr and lockout_message() in runs[LIMIT].stderr
    assert not (tmp_path / "xdg" / "taskhub" / "config.json").exists()
