"""`python manage.py purge_tasks [--days N] [--dry-run]`: delete finished tasks not updated for N days.

The same service the scheduler runs every TASKHUB_RETENTION_EVERY_SECONDS (tasks_app/ops/retention.py), in
the same short transactions of --batch-size rows; by hand it goes on until nothing eligible is left,
unless --max-batches or --max-seconds say otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks_app.ops.retention import purge_finished


class Command(BaseCommand):
    help = "Delete finished (completed, failed, cancelled) tasks and their history older than --days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=float,
            default=None,
            help="age in days of the last update (default TASKHUB_RETENTION_DAYS; 0 keeps everything)",
        )
        parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
        parser.add_argument(
            "--batch-size", type=int, default=None, help="rows per transaction (TASKHUB_RETENTION_BATCH)"
        )
        parser.add_argument("--max-batches", type=int, default=0, help="stop after this many batches (0: no limit)")
        parser.add_argument("--max-seconds", type=float, default=0.0, help="stop after this long (0: no limit)")
        parser.add_argument(
            "--archive-dir", default=None, help="append purged tasks as JSON lines here first (TASKHUB_ARCHIVE_DIR)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = settings.TASKHUB_RETENTION_DAYS if options["days"] is None else options["days"]
        if days < 0:
            raise CommandError("--days must be 0 or more")
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError("--batch-size must be 1 or more")
        result = purge_finished(
            days=days,
            batch_size=options["batch_size"],
            max_batches=options["max_batches"],
            max_seconds=options["max_seconds"],
            archive_dir=options["archive_dir"],
            dry_run=options["dry_run"],
        )
        if result.cutoff is None:
            self.stdout.write("Retention is off (0 days): nothing purged.")
            return
        before = datetime.fromtimestamp(result.cutoff, UTC).isoformat(timespec="seconds")
        if result.dry_run:
            self.stdout.write(f"Would purge {result.purged} finished task(s) last updated before {before}.")
            return
        line = (
            f"Purged {result.purged} finished task(s) and {result.history_rows} history row(s) "
            f"last updated before {before}, in {result.batches} batch(es)."
        )
        if result.archive_file:
            line += f" Archived {result.archived} line(s) to {result.archive_file}."
        if result.more:
            line += " Stopped at the batch or time limit; more may be left."
        self.stdout.write(self.style.SUCCESS(line))
