"""The watchdog cuts a round trip that outlives its limit, and says so.

Server-free: a socketpair stands for a driver connection (the watchdog only
needs ``fileno()``), and a ``recv`` on it for a call waiting on the server.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from django_sapool._watchdog import watchdog
from tests.support.forking import c_fork, in_children, live_threads, settle
from tests.support.waiting import run_threads

WATCHDOG_THREAD = "django_sapool watchdog"
#: How late the watchdog's thread may run on a busy machine.
SLACK = 0.25


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ends = socket.socketpair()
    yield ends
    for end in ends:
        end.close()


def test_a_call_past_its_limit_is_cut_and_finish_reports_the_cut(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _server = pair
    started = time.monotonic()
    key = watchdog.start(ours, 0.2, "cut", "the pre-ping")
    assert ours.recv(1) == b""  # the "server" never answers: shut down
    waited = time.monotonic() - started
    assert watchdog.finish(key) is True
    assert 0.2 <= waited < 0.2 + SLACK


def test_a_call_that_ends_in_time_is_left_alone_and_finish_reports_no_cut(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, server = pair
    key = watchdog.start(ours, 0.3, "in-time", "a reset")
    server.sendall(b"x")
    assert ours.recv(1) == b"x"
    assert watchdog.finish(key) is False
    time.sleep(0.3 + SLACK)  # past the limit: nothing happens now
    server.sendall(b"y")
    assert ours.recv(1) == b"y"
    ours.sendall(b"z")
    assert server.recv(1) == b"z"


def test_finish_reports_a_cut_made_after_the_call_had_succeeded(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The call returns right at its deadline and the watchdog cuts before
    finish() runs: the connection is dead though the call worked, so the
    caller must learn it, or the pool would lend a dead connection."""
    ours, server = pair
    key = watchdog.start(ours, 0.05, "late", "the pre-ping")
    server.sendall(b"x")
    assert ours.recv(1) == b"x"  # the call succeeded...
    time.sleep(0.05 + SLACK)  # ...and its thread was not scheduled
    assert watchdog.finish(key) is True
    assert ours.recv(1) == b""  # dead indeed


def test_calls_on_closed_connections_are_not_watched() -> None:
    closed = socket.socket()
    closed.close()
    assert watchdog.start(closed, 0.1, "closed", "the pre-ping") is None
    assert watchdog.finish(None) is False


def test_one_watchdog_thread_in_a_c_forked_child_whose_threads_start_calls_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A fork from C runs no fork hook: the child's threads are the first to
    learn of it, and several may start a call at the same moment."""
    ours, _server = pair
    watchdog.finish(watchdog.start(ours, 60, "parent", "the pre-ping"))
    assert live_threads(WATCHDOG_THREAD) == 1  # the parent's
    settle()
    threads = 8

    def child_work() -> dict[str, object]:
        sys.setswitchinterval(1e-6)
        start = threading.Barrier(threads)
        keys: list[int | None] = []

        def call() -> None:
            start.wait(10)
            keys.append(watchdog.start(ours, 60, "child", "the pre-ping"))

        errors = run_threads([call] * threads, timeout=10)
        running = live_threads(WATCHDOG_THREAD)
        cut = [watchdog.finish(key) for key in keys]
        # The child's watchdog works: a call of its own past its limit is cut.
        mine, _theirs = socket.socketpair()
        key = watchdog.start(mine, 0.05, "child", "a reset")
        cut_in_time = mine.recv(1) == b"" and watchdog.finish(key)
        return {
            "errors": [repr(error) for error in errors],
            "running": running,
            "keys": len(keys),
            "cut": cut,
            "cut_in_time": cut_in_time,
        }

    for report in in_children(c_fork, child_work, 20):
        # Never two watchdog threads. (After a fork from C, threading's table
        # still holds the parent's threads; a new thread reusing a dead one's
        # identity may be missing from it: "cut_in_time" shows one runs.)
        assert report.pop("running") <= 1
        assert report == {
            "errors": [],
            "keys": threads,
            "cut": [False] * threads,
            "cut_in_time": True,
        }
