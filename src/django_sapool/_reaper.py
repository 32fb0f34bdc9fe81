"""Close, off the collector, connections whose borrower was garbage-collected.

A borrower that is collected still holding a connection (a thread that ended
without closing it) has the connection handed back by SQLAlchemy from inside
the garbage collector, in whatever thread triggered the collection: one that
may hold our locks, or run an event loop. No network I/O may happen there.
So the pool frees the slot at once, without a byte sent, and queues the
connection here; one daemon thread per process closes it (the server then
rolls back whatever it left open). ``SimpleQueue.put`` is safe in finalisers;
starting a thread is not, so the thread starts with the first pool.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from . import _fork
from ._events import log_fields

logger = logging.getLogger("django_sapool")


class Reaper:
    """One thread per process that closes connections queued by finalisers."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, str]] = queue.SimpleQueue()
        self._started = False
        self._lock = threading.Lock()

    def forget_parent(self) -> None:
        """In a forked child: what the parent queued is the parent's to close."""
        _fork.keep_forever(self._queue)
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        """Make sure the thread runs; call outside any finaliser."""
        if self._started:
            return
        with self._lock:
            if not self._started:
                threading.Thread(
                    target=self._run, name="django_sapool reaper", daemon=True
                ).start()
                self._started = True

    def close_later(self, connection: Any, alias: str) -> None:
        """Queue a connection to close; safe inside a finaliser."""
        self._queue.put((connection, alias))

    def wait_idle(self) -> None:
        """Block until everything queued so far is closed (tests)."""
        done = threading.Event()
        self._queue.put((done, ""))
        done.wait()

    def _run(self) -> None:
        while True:
            connection, alias = self._queue.get()
            if isinstance(connection, threading.Event):
                connection.set()
                continue
            try:
                connection.close()
            except Exception as exc:  # already dead: nothing left to close
                logger.debug("Alias %r: closing a reclaimed connection: %s", alias, exc)
            logger.warning(
                "Alias %r: a connection was never given back: its borrower (a "
                "thread that ended without closing it?) was garbage-collected; "
                "the connection was closed and its pool slot freed",
                alias,
                extra=log_fields("connection_abandoned", alias),
            )
            del connection


reaper = Reaper()
_fork.on_child(reaper.forget_parent)
