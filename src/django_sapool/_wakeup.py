"""How the pool's helper threads sleep: on a pipe, not on a lock.

Since Python 3.13 a thread blocked on a lock, an ``Event`` or a queue waits in
a process-wide table of parked threads. A child forked from C (uWSGI without
its fork hooks) inherits that table unrepaired: its entries point into the
stacks of the parent's threads, which glibc hands to the child's new threads,
and the child crashes on its next wait. Stock Django starts no thread, so our
idle helpers must leave nothing there: they wait in ``poll()`` on a pipe.
"""

from __future__ import annotations

import contextlib
import os
import select


class Wakeup:
    """A wait that ``set()`` ends early; a ``set()`` before the wait counts."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        # Which pipe this is: a child forked from C may have reused the
        # numbers for files of its own by the time it forgets the parent's.
        self._identity = _identity(self._read)

    def set(self) -> None:
        """Wake the waiter; safe in a finaliser (one system call, no lock)."""
        with contextlib.suppress(OSError):  # full: a wakeup is pending already
            os.write(self._write, b"!")

    def wait(self, timeout: float | None) -> None:
        """Sleep until ``set()`` or ``timeout`` seconds (None: no limit)."""
        if timeout is not None and timeout < 0:
            timeout = 0
        # Looked up at each wait: gevent, once it patches, removes poll() and
        # makes select() cooperative. select() cannot wait on a descriptor
        # numbered past 1023, poll() can.
        poll = getattr(select, "poll", None)
        if poll is not None:
            poller = poll()
            poller.register(self._read, select.POLLIN)
            poller.poll(None if timeout is None else timeout * 1000)
        else:
            select.select([self._read], [], [], timeout)
        try:
            while os.read(self._read, 512):
                pass
        except OSError:  # BlockingIOError: drained
            pass

    def close(self) -> None:
        """Give back the pipe (a forked child's copy of the parent's one)."""
        if not _identity(self._read) == _identity(self._write) == self._identity:
            return  # the numbers are another file's now: leave them alone
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        status = os.fstat(fd)
    except OSError:
        return None
    return status.st_dev, status.st_ino
