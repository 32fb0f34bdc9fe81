"""The pool's helper threads idle in ``poll()`` on a pipe, parked on no lock.

Python 3.13 keeps threads blocked on a lock in a table that a child forked
from C (uWSGI) inherits broken; a child that then starts threads can crash
(``django_sapool._wakeup``). The kernel says where each thread sleeps:
``/proc/self/task/<id>/wchan`` names a futex wait for a lock, a poll or
select wait for ours.
"""

from __future__ import annotations

import os
import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from django_sapool._leaks import LeakWatch
from django_sapool._reaper import reaper
from django_sapool._wakeup import Wakeup
from django_sapool._watchdog import watchdog

pytestmark = pytest.mark.logic


def where_asleep(thread: threading.Thread) -> str:
    with open(f"/proc/self/task/{thread.native_id}/wchan") as wchan:
        return wchan.read()


def helper(name: str) -> threading.Thread:
    """This process's thread called ``name``, once it sleeps."""
    tasks = {int(task) for task in os.listdir("/proc/self/task")}
    (thread,) = [
        t for t in threading.enumerate() if t.name == name and t.native_id in tasks
    ]
    time.sleep(0.1)  # lets it go to sleep
    return thread


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    ends = socket.socketpair()
    yield ends[0]
    for end in ends:
        end.close()


def test_a_thread_parked_on_a_lock_is_seen_as_such() -> None:
    """The probe itself: without this, the tests below could not fail."""
    event = threading.Event()
    thread = threading.Thread(target=event.wait, daemon=True)
    thread.start()
    time.sleep(0.1)
    try:
        assert "futex" in where_asleep(thread)
    finally:
        event.set()
        thread.join()


def test_the_watchdog_idles_on_its_pipe(sock: socket.socket) -> None:
    key = watchdog.start(sock, 60, "idle", "a call")  # it sleeps until then
    try:
        assert "futex" not in where_asleep(helper("django_sapool watchdog"))
    finally:
        assert watchdog.finish(key) is False
    time.sleep(0.1)  # and with no call in flight
    assert "futex" not in where_asleep(helper("django_sapool watchdog"))


def test_the_reaper_idles_on_its_pipe() -> None:
    reaper.start()
    assert "futex" not in where_asleep(helper("django_sapool reaper"))
    reaper.log_later(0, "")  # the wakeup works: the queue is served
    reaper.wait_idle()


def test_the_leak_watcher_idles_on_its_pipe() -> None:
    LeakWatch("idle", 60)
    assert "futex" not in where_asleep(helper("django_sapool leak watcher"))


def test_a_wakeup_set_before_the_wait_ends_it_at_once() -> None:
    wakeup = Wakeup()
    try:
        wakeup.set()
        wakeup.set()  # twice: still one wakeup, drained by one wait
        started = time.monotonic()
        wakeup.wait(10)
        assert time.monotonic() - started < 5
        started = time.monotonic()
        wakeup.wait(0.05)  # nothing pending now: the timeout runs
        assert time.monotonic() - started >= 0.04
    finally:
        wakeup.close()


def test_a_wakeup_set_from_another_thread_ends_the_wait() -> None:
    wakeup = Wakeup()
    try:
        timer = threading.Timer(0.05, wakeup.set)
        timer.start()
        started = time.monotonic()
        wakeup.wait(None)
        assert time.monotonic() - started < 5
        timer.join()
    finally:
        wakeup.close()


def test_a_wakeup_works_past_select_s_limit_of_1024_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        wakeup = Wakeup()  # its pipe numbered past 1024
        assert wakeup._read > 1024
        wakeup.set()
        started = time.monotonic()
        wakeup.wait(10)
        assert time.monotonic() - started < 5
        wakeup.close()
    finally:
        for fd in spare:
            os.close(fd)


def test_closing_leaves_alone_a_file_that_reused_the_pipe_s_numbers() -> None:
    """A child forked from C forgets the parent's wakeups late: by then it
    may have closed the pipe and opened files under the same numbers."""
    wakeup = Wakeup()
    numbers = (wakeup._read, wakeup._write)
    for fd in numbers:
        os.close(fd)
    reused = [os.open(os.devnull, os.O_RDONLY) for _ in range(2)]
    try:
        assert sorted(reused) == sorted(numbers)
        wakeup.close()
        for fd in reused:
            os.fstat(fd)  # still open: raises OSError if closed
    finally:
        for fd in reused:
            os.close(fd)
