"""Password guessing (README "Access control"): taskhub's glue to django-axes.

axes counts failed password logins on every entry point (the admin, /api-auth/login/ and
POST /api/v1/auth/token/) per user name and per client address, and refuses both once either reaches
AXES_FAILURE_LIMIT (settings: TASKHUB_LOGIN_FAILURE_LIMIT, TASKHUB_LOGIN_LOCKOUT_MINUTES). Operators
unlock with axes' own commands: `manage.py axes_reset_username <user>`, `axes_reset_ip <ip>`, `axes_reset`.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from axes.handlers.database import AxesDatabaseHandler  # type: ignore[import-untyped]
from axes.helpers import get_client_username  # type: ignore[import-untyped]
from axes.utils import reset  # type: ignore[import-untyped]
from django.http import HttpRequest

from tasks_app.api.permissions import client_address

# The bucket of requests with no usable address at all (e.g. a unix socket leaves REMOTE_ADDR empty).
# A valid IP, because PostgreSQL stores axes' addresses in an inet column.
UNKNOWN_ADDRESS = "0.0.0.0"  # noqa: S104  # a bucket name, nothing binds to it


def _valid(address: str | None) -> str | None:
    try:
        ip = ipaddress.ip_address(str(address or "").strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d: one bucket, not two
    return str(ip)


def lockout_address(request: HttpRequest) -> str:
    """AXES_CLIENT_IP_CALLABLE: the address whose failures count together.

    The address taskhub trusts (client_address, which honours TASKHUB_TRUSTED_PROXY_COUNT). When that
    is unknown (a forwarded request with no trusted proxies, or fewer X-Forwarded-For entries than
    proxies), REMOTE_ADDR, the TCP peer: it cannot be forged, so adding a forged X-Forwarded-For never
    moves a guesser into a fresh bucket, and a forger does not lock out other clients either. Requests
    through an untrusted proxy share the proxy's bucket, as they must.
    """
    return _valid(client_address(request)) or _valid(request.META.get("REMOTE_ADDR")) or UNKNOWN_ADDRESS


def forget_failures(username: str | None) -> int:
    """After a correct password: forget this user name's failures (from every address).

    Only the user name's: axes' own reset on success also forgets every failure from the address,
    so a guesser with one valid account could log in with it every few guesses and guess forever.
    """
    if not username:
        return 0  # reset(username=None) would forget everything
    return int(reset(username=username))


class LockoutHandler(AxesDatabaseHandler):  # type: ignore[misc]  # axes is untyped
    """AXES_HANDLER: axes' database handler, with AXES_RESET_ON_SUCCESS narrowed by forget_failures."""

    def reset_user_attempts(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        return forget_failures(get_client_username(request, credentials))
