"""The leak watcher keeps watching, whatever happens in one of its rounds.

Server-free: a loan is keyed by any object (SQLAlchemy's proxy, in the pool),
and the watcher's thread is the real one, on a fresh watcher per test.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from django_sapool import _leaks, _registry
from django_sapool._leaks import LeakWatch
from tests.support.forking import c_fork, in_children, live_threads, settle
from tests.support.waiting import run_threads, wait_until

WATCHER_THREAD = "django_sapool leak watcher"


class Borrower:
    """Stands for SQLAlchemy's checkout proxy: a weakly referenced key."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ChangingSet:
    """A watcher's set of watches that other threads change at every look,
    the first ``times`` times (as pools are made while it iterates)."""

    def __init__(self, watches: Any, times: int) -> None:
        self._watches = watches
        self._times = times

    def add(self, item: Any) -> None:
        self._watches.add(item)

    def __iter__(self) -> Iterator[Any]:
        if self._times > 0:
            self._times -= 1
            raise RuntimeError("Set changed size during iteration")
        return iter(self._watches)


class BrokenWatch(LeakWatch):
    """A watch whose check fails in a way nobody foresaw."""

    def overdue(self, now: float) -> list[_leaks.Loan]:
        raise ValueError("unforeseen")


@pytest.fixture
def watcher(monkeypatch: pytest.MonkeyPatch) -> _leaks._Watcher:
    """A fresh watcher, the one new LeakWatches of this test join."""
    fresh = _leaks._Watcher()
    monkeypatch.setattr(_leaks, "_watcher", fresh)
    return fresh


def leak_warnings(caplog: pytest.LogCaptureFixture, alias: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING
        and f"Alias {alias!r}" in record.getMessage()
    ]


def test_the_watcher_survives_its_set_of_watches_changing_under_it(
    watcher: _leaks._Watcher, caplog: pytest.LogCaptureFixture
) -> None:
    watcher._watches = ChangingSet(watcher._watches, times=3)  # type: ignore[assignment]
    caplog.set_level(logging.WARNING, logger="django_sapool")
    leak_watch = LeakWatch("changing", 0.1)
    borrower = Borrower()
    leak_watch.lent(borrower)
    wait_until(lambda: leak_warnings(caplog, "changing"), "a warning", interval=0.01)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_unforeseen_error_is_logged_once_and_leaks_are_still_reported(
    watcher: _leaks._Watcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="django_sapool")
    broken = BrokenWatch("broken", 0.05)  # watched while it is referenced
    time.sleep(0.3)  # rounds fail meanwhile
    leak_watch = LeakWatch("leaking", 0.1)
    borrower = Borrower()
    leak_watch.lent(borrower)
    wait_until(lambda: leak_warnings(caplog, "leaking"), "a warning", interval=0.01)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "leak watcher" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert "unforeseen" in str(errors[0].exc_info[1])
    assert broken in list(watcher._watches)


def test_a_loan_is_reported_once_past_leak_timeout_on_the_watchers_clock(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    watcher = _leaks._Watcher(clock=clock)
    caplog.set_level(logging.INFO, logger="django_sapool")
    leak_watch = LeakWatch("clocked", 30, watcher=watcher)
    borrower = Borrower()

    def checkout() -> None:  # as DatabasePool.checkout calls it
        leak_watch.lent(borrower)

    checkout()

    def look() -> None:  # one round on the fake clock, now
        watcher.check()

    clock.now += 29.9
    look()
    assert leak_warnings(caplog, "clocked") == []
    clock.now += 0.2
    look()
    look()
    (warning,) = leak_warnings(caplog, "clocked")
    assert "checked out for 30.1 s (leak_timeout=30)" in warning
    assert "in test_a_loan_is_reported_once" in warning  # who checked it out
    clock.now += 10
    leak_watch.returned(borrower)
    (back,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert back.endswith("came back after 40.1 s")


def test_one_leak_watcher_thread_in_a_c_forked_child_whose_threads_watch_at_once() -> (
    None
):
    """A fork from C runs no fork hook: the child's threads are the first to
    learn of it, some from the registry and some from the leak watcher."""
    LeakWatch("parent", 60)
    assert live_threads(WATCHER_THREAD) >= 1  # the parent's, at least one
    settle()
    threads = 8

    def child_work() -> dict[str, int]:
        sys.setswitchinterval(1e-6)
        start = threading.Barrier(threads)
        made: list[LeakWatch] = []

        def make_pool() -> None:
            start.wait(10)
            if len(made) % 2:
                _registry.pools()
            made.append(LeakWatch("child", 60))

        assert run_threads([make_pool] * threads, timeout=10) == []
        _registry.pools()
        made.append(LeakWatch("child", 60))
        return {
            "running": live_threads(WATCHER_THREAD),
            "watched": sum(1 for w in _leaks._watcher._watches if w.alias == "child"),
            "made": len(made),
        }

    for report in in_children(c_fork, child_work, 20):
        # Never two watcher threads (threading's table after a fork from C may
        # miss the one that runs: see test_watchdog), and every watch joined it.
        assert report.pop("running") <= 1
        assert report == {"watched": threads + 1, "made": threads + 1}
