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
import os
import socket
import threading
import time
from typing import Any

from . import registry

logger = logging.getLogger("django_sapool")

#: How often the watchdog looks: a call is cut at most this late.
POLL_SECONDS = 0.05


class Watchdog:
    """Calls in flight with their deadlines, checked by one thread per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: key -> (deadline, socket fd, alias, what the call is)
        self._calls: dict[int, tuple[float, int, str, str]] = {}
        self._keys = itertools.count()
        self._pid = 0

    def forget_parent(self) -> None:
        """In a forked child: the parent's calls and lock are not ours."""
        self._lock = threading.Lock()
        self._calls = {}
        self._pid = 0

    def start(self, connection: Any, limit: float, alias: str, what: str) -> int | None:
        """Note a call on ``connection`` that must end within ``limit`` seconds."""
        try:
            fd = int(connection.fileno())
        except Exception:  # closed already: the call will fail by itself
            return None
        key = next(self._keys)
        if self._pid and self._pid != os.getpid():
            self.forget_parent()  # forked from C, without Python's fork hooks
        with self._lock:
            if not self._pid:  # first use in this process
                self._pid = os.getpid()
                threading.Thread(
                    target=self._run, name="django_sapool watchdog", daemon=True
                ).start()
            self._calls[key] = (time.monotonic() + limit, fd, alias, what)
        return key

    def finish(self, key: int | None) -> bool:
        """The call ended: from now on its socket is left alone.

        True if the watchdog cut it first: its socket is shut down, even if
        the call itself succeeded, so the connection must be discarded.
        """
        if key is None:
            return False
        with self._lock:
            return self._calls.pop(key, None) is None

    def _run(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(POLL_SECONDS)
            if not self._calls:
                continue
            now = time.monotonic()
            # Under the lock: a call that finished cannot have its socket (or
            # a new socket reusing the number) shut down behind its back.
            with self._lock:
                for key, (deadline, fd, alias, what) in list(self._calls.items()):
                    if now >= deadline:
                        del self._calls[key]
                        _shut_down(fd)
                        logger.warning(
                            "Alias %r: %s took longer than ping_timeout; the "
                            "connection was cut and will be discarded",
                            alias,
                            what,
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
registry.on_fork_in_child(watchdog.forget_parent)
