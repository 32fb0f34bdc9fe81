"""Give back the connections of a thread that ended without closing them.

Django keeps one DatabaseWrapper per thread, in thread-local storage. A thread
that ends without ``close()`` (a ``ThreadPoolExecutor`` inside a view, a
fire-and-forget thread) leaves its wrapper holding a pooled connection, and
the wrapper lives in reference cycles: only a cyclic garbage collection would
free it, and its connection with it. Until then the pool is one short.

Thread-local storage itself is freed by reference counting when its thread
ends. So the first checkout of a wrapper in its own thread puts a weak
reference to it in a small per-thread object, ``_ThreadEnd``, whose
finaliser runs as the thread ends and asks each wrapper still holding a loan
to give it back (``PooledDatabaseWrapperMixin._sapool_thread_ended``). Once
per wrapper, not per checkout: a checkout pays one attribute test.

The finaliser runs in the ending thread after its last frame, or, in a child
just forked, in the forking thread for threads that do not exist there (those
loans are the parent's: the wrapper leaves them alone). It sends nothing to
any server and logs nothing itself: see ``_pool.DatabasePool.reclaim``.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from typing import Any, Protocol

from ._reaper import reaper


class Watched(Protocol):
    """A wrapper that can give back its loan when its thread has ended."""

    def _sapool_thread_ended(self, thread: str) -> None: ...


class _ThreadEnd:
    """Lives in one thread's local storage; freed, and finalised, as it ends."""

    __slots__ = ("thread", "wrappers")

    def __init__(self) -> None:
        # Its name now: as it ends, the thread is no longer threading's to name.
        self.thread = threading.current_thread().name
        self.wrappers: list[weakref.ref[Watched]] = []

    def __del__(self) -> None:
        if sys.is_finalizing():  # interpreter exit: threads are frozen, not ended
            return
        for ref in self.wrappers:
            wrapper = ref()
            if wrapper is None:
                continue
            try:
                wrapper._sapool_thread_ended(self.thread)
            except Exception as exc:  # a finaliser must not raise: say it later
                reaper.log_later(
                    logging.ERROR,
                    "Giving back the connection of an ended thread failed: %s: %s",
                    type(exc).__name__,
                    exc,
                )


_local = threading.local()


def watch(wrapper: Any) -> None:
    """Give back ``wrapper``'s loan, if any, when the current thread ends."""
    try:
        end: _ThreadEnd = _local.end
    except AttributeError:
        end = _local.end = _ThreadEnd()
    wrappers = end.wrappers
    if len(wrappers) >= _PRUNE_AT:  # a thread that makes many wrappers
        wrappers[:] = [ref for ref in wrappers if ref() is not None]
    wrappers.append(weakref.ref(wrapper))


#: Wrappers a thread keeps track of before dropping those already freed.
_PRUNE_AT = 32
