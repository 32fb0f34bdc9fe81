"""Bounded round trips: the pool's own ping or reset must not hang a worker.

A server that stops answering (a hung process, a proxy or firewall that holds
the connection open but passes nothing) leaves a blocking driver call waiting
forever: libpq and mysqlclient have no per-call timeout, and TCP keepalives
see nothing wrong while the far kernel still acknowledges. So the pool times
its own calls, the pre-ping and the reset on checkin, with ``ping_timeout``:
one watchdog thread per process shuts the socket down when a call outlives
its limit. The blocked call then fails at once with the driver's "connection
lost" error, and the pool discards the connection as it does any dead one.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import socket
import threading
import time
from typing import Any

from . import _fork
from ._events import log_fields
from ._wakeup import Wakeup

logger = logging.getLogger("django_sapool")


class Watchdog:
    """Calls in flight with their deadlines, checked by one thread per process.

    The thread sleeps until the earliest deadline, or until a call starts if
    none is in flight: it does not poll. A thread that wakes for the GIL while
    another forks from C (uWSGI) can leave the child's GIL handover stuck, and
    one parked on a lock can crash the child (``_wakeup``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakeup = Wakeup()
        #: key -> (deadline, socket fd, alias, what the call is)
        self._calls: dict[int, tuple[float, int, str, str]] = {}
        #: Calls cut whose finish() has not come yet.
        self._cut: set[int] = set()
        self._keys = itertools.count()
        self._running = False
        #: When the thread looks next (monotonic); inf: when a call starts.
        self._next_look = math.inf
        self._error_logged = False

    def forget_parent(self) -> None:
        """In a forked child (registry callback): the parent's thread, calls
        and lock are not ours, and the lock may be held by a vanished thread."""
        self._lock = threading.Lock()
        self._wakeup.close()
        self._wakeup = Wakeup()
        self._calls = {}
        self._cut = set()
        self._running = False
        self._next_look = math.inf

    def start(self, connection: Any, limit: float, alias: str, what: str) -> int | None:
        """Note a call on ``connection`` that must end within ``limit`` seconds."""
        try:
            fd = int(connection.fileno())
        except Exception:  # closed already: the call will fail by itself
            return None
        if fd < 0:  # a closed socket says so instead
            return None
        _fork.check()  # a child forked from C learns it here
        key = next(self._keys)
        deadline = time.monotonic() + limit
        with self._lock:
            self._calls[key] = (deadline, fd, alias, what)
            if not self._running:  # first use in this process
                self._running = True
                threading.Thread(
                    target=self._run, name="django_sapool watchdog", daemon=True
                ).start()
            elif deadline < self._next_look:  # rarely: once per idle spell
                self._next_look = deadline
                self._wakeup.set()
        return key

    def finish(self, key: int | None) -> bool:
        """The call ended: leave its socket alone. True if it was cut.

        A cut call's connection is dead even if the call itself succeeded (it
        ended right at its deadline): the caller must discard it.
        """
        if key is None:
            return False
        with self._lock:
            if self._calls.pop(key, None) is not None:
                return False
            if key in self._cut:
                self._cut.discard(key)
                return True
            return False

    def _run(self) -> None:
        while True:
            try:
                self._look()
            except Exception:  # pragma: no cover - a bug: say so once, go on
                if not self._error_logged:
                    self._error_logged = True
                    logger.exception("django_sapool watchdog: unexpected error")
                time.sleep(1)

    def _look(self) -> None:
        """Cut the calls past their deadline, or sleep until the next one."""
        cut = []
        # Under the lock: a call that finished cannot have its socket (or
        # a new socket reusing the number) shut down behind its back.
        with self._lock:
            now = time.monotonic()
            next_look = math.inf
            for key, (deadline, fd, alias, what) in list(self._calls.items()):
                if now >= deadline:
                    del self._calls[key]
                    self._cut.add(key)
                    _shut_down(fd)
                    cut.append((alias, what))
                else:
                    next_look = min(next_look, deadline)
            self._next_look = next_look
        if not cut:  # a call started since then has set the wakeup
            self._wakeup.wait(None if next_look == math.inf else next_look - now)
            return
        for alias, what in cut:
            logger.warning(
                "Alias %r: %s took longer than ping_timeout; the connection "
                "was cut and will be discarded",
                alias,
                what,
                extra=log_fields(
                    "connection_discarded", alias, reason="ping_timeout", during=what
                ),
            )


def _shut_down(fd: int) -> None:
    """Shut the socket down (not close it: the driver still owns the number)."""
    try:
        duplicate = os.dup(fd)
    except OSError:
        return
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        return
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


watchdog = Watchdog()
_fork.on_child(watchdog.forget_parent)
