"""`python manage.py create_node_token <node>`: the node's own account ("node:<node>") and its API token."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks_app.models import Node
from tasks_app.ops import accounts


class Command(BaseCommand):
    help = (
        "Create (or reuse) the account 'node:NODE', link it to the node, and print its API token. With it the "
        "node may pull its own tasks (GET /api/v1/tasks/<cluster>/<node>), read them and report on them "
        "(POST /task_update), and nothing else."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("node", help="the node's name (it must be registered)")
        parser.add_argument("--rotate", action="store_true", help="replace the token; the old one stops working")
        parser.add_argument("--revoke", action="store_true", help="delete the token and print nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["node"]
        node = Node.objects.filter(name=name).first()
        if node is None:
            known = ", ".join(Node.objects.values_list("name", flat=True)[:20]) or "none"
            raise CommandError(f"no node named {name!r} (known: {known})")
        if options["revoke"]:
            if node.user is None or not accounts.token_revoke(user=node.user):
                raise CommandError(f"node {name!r} has no token")
            self.stderr.write(f"Revoked the token of node {name!r}.")
            return
        try:
            user = accounts.node_account_ensure(node=node)
        except accounts.AccountConflict as exc:
            raise CommandError(str(exc)) from exc
        # Only the key on stdout, so that TOKEN=$(manage.py create_node_token node1) works.
        self.stdout.write(accounts.token_issue(user=user, rotate=options["rotate"]))
