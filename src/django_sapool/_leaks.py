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
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import _fork
from ._events import log_fields
from ._wakeup import Wakeup

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

    def __init__(
        self, alias: str, limit: float, *, watcher: _Watcher | None = None
    ) -> None:
        """Watched by ``watcher``, by default this process's one."""
        self.alias = alias
        self.limit = limit
        # Keyed by the pool's Loan: a borrower collected without giving the
        # connection back takes its entry with it (the pool frees the slot).
        self._loans: weakref.WeakKeyDictionary[Any, Loan] = weakref.WeakKeyDictionary()
        if watcher is None:
            _fork.check()  # a child forked from C gets its own watcher
            watcher = _watcher
        self._clock = watcher.clock
        watcher.watch(self)

    def lent(self, loan: Any) -> None:
        self._loans[loan] = Loan(
            self.alias,
            self._clock(),
            threading.current_thread().name,
            traceback.StackSummary.from_list(traceback.extract_stack()[:-2]),
        )

    def returned(self, lent: Any) -> None:
        loan = self._loans.pop(lent, None)
        if loan is not None and loan.reported:
            logger.info(
                "Alias %r: the connection reported as leaked (thread %r) came "
                "back after %.1f s",
                self.alias,
                loan.thread,
                self._clock() - loan.started,
            )

    def overdue(self, now: float) -> list[Loan]:
        """Loans past the limit not reported yet; marks them reported."""
        # Borrowers' threads add and remove loans meanwhile.
        loans = _snapshot(self._loans.values())
        late = [
            loan
            for loan in loans
            if not loan.reported and now - loan.started > self.limit
        ]
        for loan in late:
            loan.reported = True
        return late


class _Watcher:
    """One daemon thread per process that checks every LeakWatch.

    Nothing may stop it: an error in one round is logged (once) and the next
    round comes all the same, or leaks would go unreported for good.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._watches: weakref.WeakSet[LeakWatch] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._running = False
        self._wake = Wakeup()
        self._round = threading.Lock()
        self._error_logged = False

    def watch(self, leak_watch: LeakWatch) -> None:
        with self._lock:
            self._watches.add(leak_watch)
            if not self._running:
                self._running = True
                threading.Thread(
                    target=self._run, name="django_sapool leak watcher", daemon=True
                ).start()
        self._wake.set()  # a shorter limit may need an earlier look

    def check(self) -> float:
        """One round: report overdue loans; return when to look next (s)."""
        with self._round:  # never two rounds at once: each loan reported once
            watches = _snapshot(self._watches)  # pools are made meanwhile
            now = self.clock()
            for leak_watch in watches:
                try:
                    for loan in leak_watch.overdue(now):
                        _report(leak_watch, loan, now)
                except Exception:  # the other pools' leaks still count
                    self._unexpected()
        # Look again within a quarter of the shortest limit.
        limits = [w.limit for w in watches] or [60.0]
        return min(max(min(limits) / 4, 0.05), 5.0)

    def _run(self) -> None:
        while True:
            try:
                delay = self.check()
            except Exception:
                self._unexpected()
                delay = 1.0
            self._wake.wait(delay)

    def _unexpected(self) -> None:
        """Log the error being handled, the first time only: it may recur."""
        if not self._error_logged:
            self._error_logged = True
            logger.exception(
                "django_sapool leak watcher: unexpected error (logged once); "
                "leak detection goes on"
            )


_T = TypeVar("_T")


def _snapshot(items: Iterable[_T]) -> list[_T]:
    """A list of a weak collection that other threads may change meanwhile."""
    for _ in range(100):
        try:
            return list(items)
        except RuntimeError:  # "changed size during iteration": look again
            continue
    return list(items)


def _report(leak_watch: LeakWatch, loan: Loan, now: float) -> None:
    logger.warning(
        "Alias %r: a connection has been checked out for %.1f s (leak_timeout="
        "%g) by thread %r; it is not back in the pool. Checked out at:\n%s",
        leak_watch.alias,
        now - loan.started,
        leak_watch.limit,
        loan.thread,
        "".join(loan.stack.format()).rstrip(),
        extra=log_fields(
            "connection_leaked",
            leak_watch.alias,
            held_seconds=round(now - loan.started, 1),
            thread=loan.thread,
        ),
    )


_watcher = _Watcher()


def _new_watcher_after_fork() -> None:
    # The parent's watcher thread does not exist here, and its lock may have
    # been held at the fork; the child's pools start a watcher of their own.
    global _watcher
    _watcher._wake.close()
    _watcher = _Watcher()


_fork.on_child(_new_watcher_after_fork)
