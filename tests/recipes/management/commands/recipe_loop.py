"""A long-running command whose threads loop, calling close_old_connections().

Each iteration runs outside any request, so nothing gives its connection
back unless the loop does: ``close_old_connections()`` at the top of each
iteration (and ``connection.close()`` when a thread ends) returns it to the
pool, rolled back. Half of the iterations leave a transaction open on
purpose (autocommit off, no commit), as careless job code does.

Prints one JSON line once every thread has finished: the sessions used and
the pool's gauges. With --hold it then waits for stdin to close.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections, connection, transaction

import django_sapool
from tests.recipes.views import report


def iteration(number: int) -> int:
    if number % 2:
        with transaction.atomic():
            return int(report()["backend"])
    transaction.set_autocommit(False)  # left open: the pool must roll it back
    return int(report()["backend"])


def loop(iterations: int, seen: list[int], errors: list[BaseException]) -> None:
    try:
        for number in range(iterations):
            close_old_connections()
            seen.append(iteration(number))
    except BaseException as exc:
        errors.append(exc)
    finally:
        connection.close()


class Command(BaseCommand):
    help = "Loop in threads outside requests, giving connections back each time."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--threads", type=int, default=4)
        parser.add_argument("--iterations", type=int, default=12)
        parser.add_argument("--hold", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        seen: list[int] = []
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=loop, args=(options["iterations"], seen, errors))
            for _ in range(options["threads"])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = django_sapool.get_stats("default")
        print(
            json.dumps(
                {
                    "backends": sorted(set(seen)),
                    "iterations": len(seen),
                    "errors": [repr(error) for error in errors],
                    "checked_out": stats["pool_used"],
                    "connections_open": stats["pool_size"],
                }
            )
        )
        sys.stdout.flush()
        if options["hold"]:
            sys.stdin.read()
