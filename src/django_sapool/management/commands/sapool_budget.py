"""``manage.py sapool_budget --workers N --threads T``: will the pools fit?"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_sapool._budget import BudgetError, budget
from django_sapool.checks import pooled_aliases


class Command(BaseCommand):
    help = (
        "Check that WORKERS processes x THREADS threads, each process with its "
        "own pool per alias, fit each database server's max_connections."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--workers",
            type=int,
            required=True,
            help="processes using the pools (all hosts)",
        )
        parser.add_argument(
            "--threads", type=int, default=1, help="threads per process (default 1)"
        )
        parser.add_argument(
            "--database",
            action="append",
            dest="aliases",
            help="alias to check (repeatable; default: every pooled alias)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workers, threads = options["workers"], options["threads"]
        if workers < 1 or threads < 1:
            raise CommandError("--workers and --threads must be at least 1")
        aliases = options["aliases"] or pooled_aliases()
        if not aliases:
            self.stdout.write(
                "No database alias uses a django_sapool ENGINE: no pool to check."
            )
            return
        try:
            servers = budget(workers, threads, aliases)
        except BudgetError as exc:
            raise CommandError(str(exc)) from exc
        over = []
        for server in servers:
            self.stdout.write(f"{server.server}:")
            for need in server.aliases:
                if need.pool_max == -1:
                    per_process = f"{threads} threads (max_overflow=-1: no pool limit)"
                else:
                    per_process = (
                        f"min({threads} threads, "
                        f"pool_size+max_overflow={need.pool_max})"
                    )
                self.stdout.write(
                    f"  {need.alias}: {workers} workers x {per_process} = {need.needed}"
                )
            verdict = "fits" if server.fits else "DOES NOT FIT"
            self.stdout.write(
                f"  needs {server.needed} of {server.usable} usable connections "
                f"(max_connections={server.max_connections}, "
                f"{server.reserved} reserved for superusers, "
                f"{server.in_use} in use now): {verdict}"
            )
            if not server.fits:
                over.append(server.server)
        if over:
            raise CommandError(
                f"pools may need more connections than {', '.join(over)} allows: "
                "lower pool_size/max_overflow, run fewer processes, or raise "
                "max_connections (or put PgBouncer in between)"
            )
