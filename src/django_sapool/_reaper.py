"""Close, off the collector, connections whose borrower was garbage-collected
(and run other work that must not run where it arises: ``run_later``).

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
from functools import partial
from typing import Any

from . import _fork
from ._wakeup import Wakeup

logger = logging.getLogger("django_sapool")


class Reaper:
    """One thread per process that runs what finalisers (and others) queue.

    The queue holds plain functions: putting one is a single call, safe in a
    finaliser, and the thread runs them in turn.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
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
        self.run_later(partial(_close, connection, why, args, extra))

    def log_later(self, level: int, message: str, *args: object) -> None:
        """Queue a log record; safe inside a finaliser."""
        self.run_later(partial(logger.log, level, message, *args))

    def run_later(self, function: Callable[[], object]) -> None:
        """Run ``function`` in this thread: for work a finaliser may not do, or
        a request should not pay for (the OpenTelemetry SDK's records)."""
        self._queue.put(function)
        self._wakeup.set()

    def wait_idle(self) -> None:
        """Block until everything queued so far is done (tests)."""
        done = threading.Event()
        self.run_later(done.set)
        done.wait()

    def _run(self) -> None:
        while True:
            try:
                function = self._queue.get_nowait()
            except queue.Empty:  # anything put after this has set the wakeup
                self._wakeup.wait(None)
                continue
            try:
                function()
            except Exception:
                logger.exception("django_sapool: background work failed")
            del function  # a queued connection is not kept alive meanwhile


def _close(
    connection: Any, why: str, args: tuple[object, ...], extra: dict[str, Any] | None
) -> None:
    try:
        connection.close()
    except Exception as exc:  # already dead: nothing left to close
        logger.debug("Closing a reclaimed connection: %s", exc)
    logger.warning(why, *args, extra=extra)


reaper = Reaper()
_fork.on_child(reaper.forget_parent)
