"""GET /metrics: the Prometheus exposition (tasks_app/ops/metrics.py).

Public by default. With TASKHUB_METRICS_PUBLIC=false it answers only
  - a staff user logged in to the admin (session), or
  - a DRF token (`Authorization: Token <key>`, or `Bearer <key>`, the scheme Prometheus sends by
    default; tasks_app/api/authentication.py) of any active user, so a scraper can use a service
    account that is not staff.
Anything else: 401 without credentials or with a bad token or scheme, 403 for a logged-in non-staff user.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework.exceptions import AuthenticationFailed

from tasks_app.api import authentication
from tasks_app.api.permissions import node_of
from tasks_app.ops import metrics


def _check(request: HttpRequest) -> int:
    """200 if this request may read the metrics, else the status to answer (401 or 403)."""
    try:
        # Checked even when the metrics are public: a credential that is sent is never ignored.
        found = authentication.authenticate(request)
    except AuthenticationFailed:
        return 401
    if settings.TASKHUB_METRICS_PUBLIC:
        return 200
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff and node_of(user) is None:
        return 200
    if found is not None:
        # A node's token is worth its own tasks only, not the whole system's numbers.
        return 403 if node_of(found[0]) is not None else 200
    return 403 if user is not None and user.is_authenticated else 401


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    status = _check(request)
    if status != 200:
        text = "Staff or a token only\n" if status == 403 else "Authentication required: a token or a staff login\n"
        resp = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
        if status == 401:
            resp["WWW-Authenticate"] = authentication.CHALLENGE
        return resp
    return HttpResponse(metrics.render(), content_type=CONTENT_TYPE_LATEST)
