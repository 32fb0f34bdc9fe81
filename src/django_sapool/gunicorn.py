"""gunicorn server hooks; the whole recipe is one line in ``gunicorn.conf.py``::

    from django_sapool.gunicorn import post_fork, worker_exit

gunicorn finds the hooks by name and calls them with ``(server, worker)``;
nothing here imports gunicorn. Fork is detected without them, so they make a
worker's lifecycle explicit rather than safe: it starts with no pool from the
master, and it ends its server sessions itself instead of leaving them to the
interpreter's exit.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections

from ._registry import dispose

__all__ = ["post_fork", "worker_exit"]


def post_fork(server: Any, worker: Any) -> None:
    """In a new worker: forget the pools inherited from the master (``--preload``).

    Safe because in a forked child ``dispose()`` only drops its references;
    it never sends a byte on the master's sockets, so the master's sessions
    live on.
    """
    dispose()


def worker_exit(server: Any, worker: Any) -> None:
    """In an exiting worker: give Django's connections back, then close the pool.

    Otherwise the sessions end only if and when the interpreter's exit happens
    to collect the connections; a worker that never gets that far leaves
    dropped sockets, which the server counts as lost clients.
    """
    if settings.configured:  # else Django never ran here: nothing to give back
        connections.close_all()
    dispose()
