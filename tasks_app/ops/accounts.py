"""Writes to accounts and API tokens: service accounts, node accounts (README "Access control").

The management commands create_service_token and create_node_token, and run_stack, call these.
Roles themselves are decided in tasks_app/api/permissions.py.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework.authtoken.models import Token

from tasks_app.api.permissions import NODE_USER_PREFIX, SERVICES_GROUP, node_of
from tasks_app.models import Node


class AccountConflict(Exception):
    """The name belongs to an account of another kind; giving it this role would change what it may do."""


def _get_or_create_user(username: str) -> tuple[AbstractBaseUser, bool]:
    user_model = get_user_model()
    user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
    if user is not None:
        return user, False
    user = user_model(**{user_model.USERNAME_FIELD: username})
    user.set_unusable_password()  # tokens only: no password login, not in the admin
    user.save()
    return user, True


def service_account_ensure(*, name: str) -> AbstractBaseUser:
    """The user `name`, a member of the group "services". Creates both as needed."""
    with transaction.atomic():
        user, created = _get_or_create_user(name)
        if not created and (getattr(user, "is_staff", False) or node_of(user) is not None):
            raise AccountConflict(f"user {name!r} is an operator or a node account, not a service account")
        group, _ = Group.objects.get_or_create(name=SERVICES_GROUP)
        group.user_set.add(user.pk)
    return user


def node_account_ensure(*, node: Node) -> AbstractBaseUser:
    """The user "node:<name>", linked to the node. Creates it as needed."""
    username = f"{NODE_USER_PREFIX}{node.name}"
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        if node.user is not None and node.user.get_username() != username:
            raise AccountConflict(f"node {node.name!r} is linked to user {node.user.get_username()!r} already")
        user, created = _get_or_create_user(username)
        if not created and (getattr(user, "is_staff", False) or getattr(user, "is_superuser", False)):
            raise AccountConflict(f"user {username!r} is an operator; a node account must not be")
        other = Node.objects.filter(user_id=user.pk).exclude(pk=node.pk).first()
        if other is not None:
            raise AccountConflict(f"user {username!r} is the account of node {other.name!r}")
        if node.user_id != user.pk:
            node.user_id = user.pk
            node.save(update_fields=["user"])
    return user


def token_issue(*, user: AbstractBaseUser, rotate: bool = False) -> str:
    """The user's API token (DRF keeps one per user); `rotate` replaces it, so the old one stops working."""
    with transaction.atomic():
        if rotate:
            Token.objects.filter(user_id=user.pk).delete()
        token, _ = Token.objects.get_or_create(user_id=user.pk)
    return str(token.key)


def token_revoke(*, user: AbstractBaseUser) -> bool:
    """Delete the user's token. Whether there was one."""
    deleted, _ = Token.objects.filter(user_id=user.pk).delete()
    return bool(deleted)
