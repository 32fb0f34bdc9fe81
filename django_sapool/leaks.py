"""Leak detection: warn about connections checked out for too long.

A thread that never gives its connection back (a background loop without
``close_old_connections()``, a management command that runs for hours) keeps
one pool slot forever; enough of them and every request waits for
``timeout``. With ``leak_timeout`` set, each checkout notes when and where it
happened (the stack costs some microseconds, so only then), and one watcher
thread per process logs a WARNING with that stack once a connection has been
out longer than the limit, and an INFO line if it comes back after all.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any

from . import registry

logger = logging.getLogger("django_sapool")


@dataclass
class Loan:
    """Who took a connection, when, and from where."""

    alias: str
    started: float
    thread: str
    stack: traceback.StackSummary
    reported: bool = field(default=False)


class LeakWatch:
    """The loans of one pool with a leak_timeout, checked by the watcher."""

    def __init__(self, alias: str, limit: float) -> None:
        self.alias = alias
        self.limit = limit
        # Keyed by SQLAlchemy's proxy: a borrower collected without giving the
        # connection back takes its loan with it (the checkin hook resets it).
        self._loans: weakref.WeakKeyDictionary[Any, Loan] = weakref.WeakKeyDictionary()
        _watcher.watch(self)  # the current process's watcher (see below)

    def lent(self, fairy: Any) -> None:
        self._loans[fairy] = Loan(
            self.alias,
            time.monotonic(),
            threading.current_thread().name,
            traceback.StackSummary.from_list(traceback.extract_stack()[:-2]),
        )

    def returned(self, fairy: Any) -> None:
        loan = self._loans.pop(fairy, None)
        if loan is not None and loan.reported:
            logger.info(
                "Alias %r: the connection reported as leaked (thread %r) came "
                "back after %.1f s",
                self.alias,
                loan.thread,
                time.monotonic() - loan.started,
            )

    def overdue(self, now: float) -> list[Loan]:
        """Loans past the limit not reported yet; marks them reported."""
        while True:
            try:  # borrowers' threads add and remove loans meanwhile
                loans = list(self._loans.values())
                break
            except RuntimeError:
                continue
        late = [
            loan
            for loan in loans
            if not loan.reported and now - loan.started > self.limit
        ]
        for loan in late:
            loan.reported = True
        return late


class _Watcher:
    """One daemon thread per process that checks every LeakWatch."""

    def __init__(self) -> None:
        self._watches: weakref.WeakSet[LeakWatch] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pid = 0
        self._wake = threading.Event()

    def watch(self, leak_watch: LeakWatch) -> None:
        with self._lock:
            self._watches.add(leak_watch)
            if self._pid != os.getpid():  # never started, or started before fork
                self._pid = os.getpid()
                self._wake = threading.Event()
                threading.Thread(
                    target=self._run, name="django_sapool leak watcher", daemon=True
                ).start()
            else:
                self._wake.set()  # a shorter limit may need an earlier look

    def _run(self) -> None:
        wake = self._wake
        while True:
            watches = list(self._watches)
            now = time.monotonic()
            for leak_watch in watches:
                for loan in leak_watch.overdue(now):
                    _report(leak_watch, loan, now)
            # Look again within a quarter of the shortest limit.
            limits = [w.limit for w in watches] or [60.0]
            wake.wait(min(max(min(limits) / 4, 0.05), 5.0))
            wake.clear()


def _report(leak_watch: LeakWatch, loan: Loan, now: float) -> None:
    logger.warning(
        "Alias %r: a connection has been checked out for %.1f s (leak_timeout="
        "%g) by thread %r; it is not back in the pool. Checked out at:\n%s",
        leak_watch.alias,
        now - loan.started,
        leak_watch.limit,
        loan.thread,
        "".join(loan.stack.format()).rstrip(),
    )


_watcher = _Watcher()


def _new_watcher_after_fork() -> None:
    # The parent's watcher thread does not exist here, and its lock may have
    # been held at the fork; the child's pools start a watcher of their own.
    global _watcher
    _watcher = _Watcher()


registry.on_fork_in_child(_new_watcher_after_fork)
