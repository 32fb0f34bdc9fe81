"""Close, off the collector, connections whose borrower was garbage-collected.

(And run the little other work that must not run where it arises: see
``run_later``.)

A borrower that is collected still holding a connection (a thread that ended
without closing it) has the connection handed back by SQLAlchemy from inside
the garbage collector, in whatever thread triggered the collection: one that
may hold our locks, or run an event loop. No network I/O may happen there.
So the pool frees the slot at once, without a byte sent, and queues the
connection here; one daemon thread per process closes it (the server then
rolls back whatever it left open). ``SimpleQueue.put`` is safe in finalisers;
starting a thread is not, so the thread starts with the first pool. The thread
waits on a ``Wakeup``, not on the queue, to park in no lock (``_wakeup``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from . import _fork
from ._wakeup import Wakeup

logger = logging.getLogger("django_sapool")

#: A connection to close (or None, or an Event to set), and what to log:
#: level, message, its arguments, and the structured fields (_events).
_Item = tuple[Any, int, str, tuple[object, ...], "dict[str, Any] | None"]


class _Work:
    """A function queued with ``run_later``."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[[], object]) -> None:
        self.function = function


class Reaper:
    """One thread per process that closes connections queued by finalisers."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._wakeup = Wakeup()
        self._started = False
        self._lock = threading.Lock()

    def forget_parent(self) -> None:
        """In a forked child: what the parent queued is the parent's to close."""
        _fork.keep_forever(self._queue)
        self._queue = queue.SimpleQueue()
        self._wakeup.close()
        self._wakeup = Wakeup()
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

    def close_later(
        self,
        connection: Any,
        why: str,
        *args: object,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Queue a connection to close, and a warning to log (``why % args``);
        safe inside a finaliser."""
        self._queue.put((connection, logging.WARNING, why, args, extra))
        self._wakeup.set()

    def log_later(self, level: int, message: str, *args: object) -> None:
        """Queue a log record; safe inside a finaliser."""
        self._queue.put((None, level, message, args, None))
        self._wakeup.set()

    def run_later(self, function: Callable[[], object]) -> None:
        """Run ``function`` in this thread: for work a request must not pay
        for (the OpenTelemetry SDK's records past its queue's limit)."""
        self._queue.put((_Work(function), 0, "", (), None))
        self._wakeup.set()

    def wait_idle(self) -> None:
        """Block until everything queued so far is done (tests)."""
        done = threading.Event()
        self._queue.put((done, 0, "", (), None))
        self._wakeup.set()
        done.wait()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:  # anything put after this has set the wakeup
                self._wakeup.wait(None)
                continue
            connection, level, message, args, extra = item
            if isinstance(connection, threading.Event):
                connection.set()
                continue
            if isinstance(connection, _Work):
                try:
                    connection.function()
                except Exception:
                    logger.exception("django_sapool: background work failed")
                continue
            if connection is not None:
                try:
                    connection.close()
                except Exception as exc:  # already dead: nothing left to close
                    logger.debug("Closing a reclaimed connection: %s", exc)
            if message:
                logger.log(level, message, *args, extra=extra)
            del connection, item


reaper = Reaper()
_fork.on_child(reaper.forget_parent)
