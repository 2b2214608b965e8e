"""Who may do what (README "Access control"). Views name a class from here; nothing else decides.

Accounts are Django users, told apart like this (first match wins):

* node account: a user linked to a Node (Node.user, `manage.py create_node_token`). Its token may pull
  its own node's tasks, read them and report on them, and nothing else, whatever other flags it has:
  a leaked node token is worth one node.
* operator: is_staff. Everything.
* service account: a member of the group "services" (`manage.py create_service_token`). Tasks, the same
  on both surfaces: create, read, change, delete, cancel and retry (the seed API, /api/v1/tasks/);
  the rest of /api/v1 it reads.
* any other user: reads /api/v1 and the seed API, writes nothing.

Anonymous requests get the seed API only, and only from TASKHUB_SEED_ANON_NETWORKS.
A task a node account may not see answers 404 exactly like a task that does not exist, so a node
cannot probe which task ids exist.
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, Group
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.throttling import AnonRateThrottle

from tasks_app.api import authentication
from tasks_app.errors import TaskNotFound
from tasks_app.models import GlobalTask, Node

if TYPE_CHECKING:
    # Not at run time: DRF imports this module (DEFAULT_PERMISSION_CLASSES) while defining APIView.
    from rest_framework.views import APIView

SERVICES_GROUP = "services"
NODE_USER_PREFIX = "node:"

AnyUser = AbstractBaseUser | AnonymousUser
_UNSET: Any = object()


# --- roles ---------------------------------------------------------------------------------------


def node_of(user: AnyUser | None) -> Node | None:
    """The node this is the account of, or None. Looked up once per request (cached on the user)."""
    if user is None or not user.is_authenticated:
        return None
    node = getattr(user, "_taskhub_node", _UNSET)
    if node is _UNSET:
        node = Node.objects.select_related("cluster").filter(user_id=user.pk).first()
        setattr(user, "_taskhub_node", node)  # noqa: B010  # not a declared attribute of the user model
    assert node is None or isinstance(node, Node)
    return node


def is_operator(user: AnyUser | None) -> bool:
    return bool(user is not None and user.is_authenticated and getattr(user, "is_staff", False)) and (
        node_of(user) is None
    )


def is_service(user: AnyUser | None) -> bool:
    if user is None or not user.is_authenticated or node_of(user) is not None:
        return False
    return Group.objects.filter(name=SERVICES_GROUP, user__pk=user.pk).exists()


def _action(view: APIView) -> str | None:
    return getattr(view, "action", None)


# --- /api/v1 -------------------------------------------------------------------------------------


class OperatorOrReadOnly(BasePermission):
    """The default for /api/v1: operators do anything, other accounts read, node accounts nothing."""

    message = "Only operators (staff users) may change this; your account may only read."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if node_of(user) is not None:
            self.message = "Node accounts may only use the pull API, /task_update and their own tasks."
            return False
        return is_operator(user) or request.method in SAFE_METHODS


class TaskAccess(BasePermission):
    """/api/v1/tasks/: like OperatorOrReadOnly, plus: service accounts do to tasks what they may do on
    the seed API (create, change, delete; and cancel and retry), and a node account reads its own tasks
    one at a time (another node's task is a 404)."""

    message = "Only operators and service accounts may change tasks; your account may only read them."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if node_of(user) is not None:
            self.message = "Node accounts may read only their own tasks here, one at a time."
            return _action(view) == "retrieve"
        if is_operator(user) or request.method in SAFE_METHODS:
            return True
        return is_service(user)

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        node = node_of(request.user)
        if node is not None and isinstance(obj, GlobalTask) and obj.node != node.name:
            raise TaskNotFound(obj.task_id)  # the same answer as for a task that does not exist
        return True


def _refers_to(ref: str, name: str, pk: uuid.UUID) -> bool:
    """Whether a URL segment names this row (the selectors take a name or an id)."""
    if ref == name:
        return True
    try:
        return uuid.UUID(ref) == pk
    except ValueError:
        return False


class NodePullAccess(BasePermission):
    """Kadalu's pull API marks what it returns as received, so it is not a read: only the node's own
    account (or an operator) may pull a node's tasks."""

    message = "Only this node's own account or an operator may pull its tasks."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        node = node_of(user)
        if node is None:
            return is_operator(user)
        kwargs = getattr(view, "kwargs", {})
        return _refers_to(str(kwargs.get("node", "")), node.name, node.pk) and _refers_to(
            str(kwargs.get("cluster", "")), node.cluster.name, node.cluster.pk
        )


class LoginRateThrottle(AnonRateThrottle):
    """POST /api/v1/auth/token/: TASKHUB_LOGIN_RATE attempts per client address (password guessing).

    Counted in Django's cache, which is per process unless CACHES says otherwise."""

    scope = "login"

    def get_rate(self) -> str:
        return str(settings.TASKHUB_LOGIN_RATE)


# --- the seed API (plain Django views) --------------------------------------------------------------


def client_address(request: HttpRequest) -> str | None:
    """The client's address as far as it can be trusted, or None when it cannot be known.

    Without trusted proxies (TASKHUB_TRUSTED_PROXY_COUNT=0) it is REMOTE_ADDR, unless the request says it
    was forwarded: then REMOTE_ADDR is a proxy's, and every client would look like the proxy. With N
    trusted proxies, each appends the address it saw to X-Forwarded-For; the Nth from the right is the
    one the outermost trusted proxy saw. Entries further left are the client's own claims.
    """
    remote = str(request.META.get("REMOTE_ADDR", ""))
    forwarded = [h.strip() for h in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",") if h.strip()]
    proxies = int(settings.TASKHUB_TRUSTED_PROXY_COUNT)
    if proxies <= 0:
        if forwarded or "HTTP_FORWARDED" in request.META or "HTTP_X_REAL_IP" in request.META:
            return None
        return remote or None
    if len(forwarded) < proxies:
        return None
    return forwarded[-proxies]


def anonymous_allowed(request: HttpRequest) -> bool:
    """Whether the request comes from a network in TASKHUB_SEED_ANON_NETWORKS."""
    address = client_address(request)
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d
    return any(ip in ipaddress.ip_network(net, strict=False) for net in settings.TASKHUB_SEED_ANON_NETWORKS)


def cross_site(request: HttpRequest) -> str | None:
    """Why this request comes from another site's page, or None. Browsers say so in Sec-Fetch-Site
    (`cross-site`), and in Origin on every POST, PUT and DELETE; a page may not set either. A request
    without both (curl, the reference service's clients) is not a browser's, so not a forgery."""
    fetch_site = str(request.META.get("HTTP_SEC_FETCH_SITE", "")).lower()
    if fetch_site == "cross-site":
        return "Sec-Fetch-Site: cross-site"
    origin = request.META.get("HTTP_ORIGIN")
    if origin is None:
        return None
    # Django's own origin check (this server, or CSRF_TRUSTED_ORIGINS, wildcards included), so the rule
    # is the one every form of the admin lives by. A private method, stable since Django 4.0.
    if CsrfViewMiddleware(lambda r: HttpResponse())._origin_verified(request):  # type: ignore[attr-defined]
        return None
    return f"Origin {origin!r} is not this server ({request.scheme}://{request.get_host()}) nor in CSRF_TRUSTED_ORIGINS"


def seed_error(message: str, status: int) -> JsonResponse:
    # tasks_app.api.errors.seed_error, imported late: that module imports rest_framework.views (see above).
    from tasks_app.api.errors import seed_error as envelope

    return envelope(message, status)


def _unauthorized(message: str) -> JsonResponse:
    response = seed_error(message, 401)
    response["WWW-Authenticate"] = authentication.CHALLENGE
    return response


def seed_access(request: HttpRequest, *, node_methods: tuple[str, ...] = ()) -> JsonResponse | None:
    """Decide a seed API request: None to let it through, else the 401/403 envelope to answer.

    Credentials: `Authorization: Token <key>`, or a browser session for GET only (the seed views take no
    CSRF token, so a session never authorises a write). Sets request.user to who it is. `node_methods`:
    the methods a node account may call here; the view then checks the task is its own
    (seed_require_own_task).
    """
    try:
        found = authentication.authenticate(request)
    except AuthenticationFailed as exc:
        return _unauthorized(str(exc.detail))
    user: AnyUser | None = found[0] if found is not None else getattr(request, "user", None)
    if user is None or not user.is_authenticated or (found is None and request.method not in SAFE_METHODS):
        session_only = user is not None and user.is_authenticated
        request.user = AnonymousUser()
        if anonymous_allowed(request):
            forged = cross_site(request) if request.method not in SAFE_METHODS else None
            if forged is None:
                return None
            # A page in a browser on a trusted network is not the network's client: it would write
            # with the network's trust ("simple request" CSRF). It needs a token, which a page cannot add.
            return seed_error(f"A cross-site browser request cannot write anonymously ({forged}); send a token", 403)
        why = (
            "a browser session counts only for GET here"
            if session_only
            else "anonymous access is allowed only from TASKHUB_SEED_ANON_NETWORKS"
        )
        return _unauthorized(f"Authentication required: send 'Authorization: Token <key>' ({why})")
    request.user = user  # type: ignore[assignment]  # stubs: User | AnonymousUser; any user model is fine
    if node_of(user) is not None:
        if request.method in node_methods:
            return None
        return seed_error("Node accounts may only read their own tasks (GET /task/<id>) and report on them", 403)
    if is_operator(user) or request.method in SAFE_METHODS or is_service(user):
        return None
    return seed_error("This account may only read; writing takes an operator or a service account", 403)


def seed_require_own_task(request: HttpRequest, task: GlobalTask | str) -> None:
    """For a node account: the task must be assigned to its node, else TaskNotFound (a 404 like any
    missing task). Anyone else passes."""
    node = node_of(getattr(request, "user", None))
    if node is None:
        return
    if isinstance(task, GlobalTask):
        if task.node != node.name:
            raise TaskNotFound(task.task_id)
    elif not GlobalTask.objects.filter(pk=task, node=node.name).exists():
        raise TaskNotFound(task)
