"""Fan work out to forked processes (multiprocessing), then keep using ours.

Prints one JSON line: the parent's session before and after, and what each
task saw. With --hold it then waits for stdin to close before exiting, so
that a test can look at the server while the parent is alive.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import connection

import django_sapool
from tests.recipes.views import report


def task(number: int) -> dict[str, Any]:
    """Runs in a forked child: query, then give the connection back."""
    try:
        return report()
    finally:
        connection.close()


class Command(BaseCommand):
    help = "Query from a fork-based multiprocessing pool and from the parent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--processes", type=int, default=2)
        parser.add_argument("--tasks", type=int, default=8)
        parser.add_argument("--hold", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        parent = report()  # left checked out across the fork, on purpose
        context = multiprocessing.get_context("fork")
        # initializer: optional, fork is detected anyway; it makes it explicit.
        with context.Pool(
            options["processes"], initializer=django_sapool.dispose
        ) as pool:
            tasks = pool.map(task, range(options["tasks"]), chunksize=1)
            pool.close()
            pool.join()
        after = report()
        print(json.dumps({"parent": parent, "after": after, "tasks": tasks}))
        sys.stdout.flush()
        if options["hold"]:
            sys.stdin.read()
        connection.close()
