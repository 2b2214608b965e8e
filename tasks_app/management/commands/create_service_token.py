"""`python manage.py create_service_token <name>`: a service account and its API token, for scripts."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks_app.ops import accounts


class Command(BaseCommand):
    help = (
        "Create (or reuse) the service account NAME, a member of the group 'services', and print its API "
        "token. Service accounts may use the seed API and create and read tasks in /api/v1/tasks/."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the account's user name, e.g. the service's name")
        parser.add_argument("--rotate", action="store_true", help="replace the token; the old one stops working")
        parser.add_argument("--revoke", action="store_true", help="delete the token and print nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        if options["revoke"]:
            found = get_user_model()._default_manager.filter(username=name).first()
            if found is None or not accounts.token_revoke(user=found):
                raise CommandError(f"{name!r} has no token")
            self.stderr.write(f"Revoked the token of {name!r}.")
            return
        try:
            user = accounts.service_account_ensure(name=name)
        except accounts.AccountConflict as exc:
            raise CommandError(str(exc)) from exc
        # Only the key on stdout, so that TOKEN=$(manage.py create_service_token svc) works.
        self.stdout.write(accounts.token_issue(user=user, rotate=options["rotate"]))
