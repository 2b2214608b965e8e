"""POST /api/v1/auth/token/: username + password -> {"token": ...} (`taskhub login`), under axes' lockout.

DRF's ObtainAuthToken passes its own Request to authenticate(), so axes marks that object, not the
Django request AxesMiddleware looks at: the lockout is answered here, as JSON (the middleware's answer is
plain text). And no Django login happens (no session), so axes' reset on success is done here too.
"""

from __future__ import annotations

from typing import Any

from axes.helpers import get_cool_off, get_lockout_message  # type: ignore[import-untyped]
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from tasks_app.api.lockout import forget_failures
from tasks_app.api.parsers import SafeJSONParser


def locked_out(request: Request) -> Response:
    """429 with DRF's error shape. A failure during a lockout starts the cool-off again
    (axes' AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT), so Retry-After is the whole cool-off."""
    response = Response({"detail": str(get_lockout_message())}, status=429)
    cool_off = get_cool_off(request)
    if cool_off is not None:
        response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response


class ObtainTokenView(ObtainAuthToken):
    # JSON only, like every other write (ObtainAuthToken's own list takes forms, which a page can post).
    parser_classes = (SafeJSONParser,)

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except ValidationError:
            # Set by axes on this request when the user name or the address is (now) locked out.
            if getattr(request, "axes_locked_out", False):
                return locked_out(request)
            raise
        user = serializer.validated_data["user"]
        forget_failures(user.get_username())
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})
