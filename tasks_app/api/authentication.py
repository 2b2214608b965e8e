"""One way to present a credential, on every surface (the seed API, /api/v1, /metrics): a DRF token
as `Authorization: Token <key>` or `Authorization: Bearer <key>` (the scheme Prometheus and most HTTP
clients send). A credential that is sent is always checked: a wrong token, or any other scheme (Basic,
Digest, ...), is a 401, never "anonymous", so a client never mistakes a typo for access it has."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

SCHEMES = ("Token", "Bearer")
CHALLENGE = 'Token realm="taskhub"'


class TaskhubTokenAuthentication(TokenAuthentication):
    def authenticate(self, request: Any) -> Any:
        parts = get_authorization_header(request).split()
        if not parts:
            return None
        scheme = parts[0].decode("latin-1")
        if scheme.lower() not in {s.lower() for s in SCHEMES}:
            raise AuthenticationFailed(
                f"Unsupported authorization scheme {scheme!r}: send 'Authorization: Token <key>' (or Bearer <key>)"
            )
        if len(parts) != 2:
            raise AuthenticationFailed(f"Invalid {scheme} header: send '{scheme} <key>', the key without spaces")
        try:
            key = parts[1].decode("ascii")
        except UnicodeError as exc:
            raise AuthenticationFailed(f"Invalid {scheme} header: the key must be ASCII") from exc
        return self.authenticate_credentials(key)

    def authenticate_header(self, request: Any) -> str:
        return CHALLENGE


def authenticate(request: HttpRequest) -> Any:
    """For the plain Django views (the seed API, /metrics): (user, token), None when no credential was
    sent, or AuthenticationFailed."""
    return TaskhubTokenAuthentication().authenticate(request)
