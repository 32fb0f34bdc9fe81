"""Forking helpers for tests: run work in a child, fork as uWSGI does.

A child made by a fork from C (``c_fork``) runs none of Python's fork hooks,
so its ``threading`` module still lists the parent's threads, which do not
exist there; ``live_threads`` counts only the threads the kernel has. Nor is
the GIL reset: if another thread was waiting for it at the fork, the child
inherits a condition variable with a waiter that does not exist, and can hang
handing the GIL over. ``settle()`` before forking lets threads just woken (a
watchdog told of a new call, say) go back to sleep.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest


def python_fork() -> int:
    return os.fork()


def c_fork() -> int:
    """fork(2) without Python's fork hooks, as uWSGI does by default."""
    libc = ctypes.PyDLL(None)  # keeps the GIL across the call
    return int(libc.fork())


class ChildHung(AssertionError):
    """A forked child sent no result in time (it was killed)."""


def in_children(
    fork: Callable[[], int], work: Callable[[], Any], runs: int, timeout: float = 10
) -> list[Any]:
    """``work`` in ``runs`` children forked from C while helper threads live;
    their results, failing if more than one child hung.

    A fork from C runs none of CPython's after-fork code, so the child keeps
    the interpreter's lock state as the fork found it. The likely cause of the
    rare hang seen here (not proven): a parent thread caught between waking
    from poll() and taking the interpreter lock leaves a request to drop it,
    and the child's only thread then waits for a switch to a thread that does
    not exist there (uWSGI's py-call-uwsgi-fork-hooks repairs that state).
    One such hang in a series is tolerated and reported; two fail the test,
    as would any child of ours that deadlocks each time.
    """
    results, hung = [], 0
    for _ in range(runs):
        try:
            results.append(in_child(fork, work, timeout))
        except ChildHung:
            hung += 1
            assert hung <= 1, f"{hung} of {len(results) + hung} children hung"
    if hung:
        print(f"\n[fault] one of {runs} children forked from C hung (killed)")
    return results


def in_child(
    fork: Callable[[], int], work: Callable[[], Any], timeout: float = 30
) -> Any:
    """Run ``work`` in a forked child; return its JSON result or fail the test."""
    read_end, write_end = os.pipe()
    pid = fork()
    if pid == 0:  # the child: report and leave without running any cleanup
        status = 0
        try:
            payload = {"result": work()}
        except BaseException:
            payload, status = {"error": traceback.format_exc()}, 1
        os.write(write_end, json.dumps(payload).encode())
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        if not select.select([pipe], [], [], timeout)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise ChildHung(f"child hung for {timeout} s")
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    payload = json.loads(output) if output else {"error": died(status)}
    if "error" in payload:
        pytest.fail(f"child failed:\n{payload['error']}")
    return payload["result"]


def died(status: int) -> str:
    """How a child that wrote no report ended, from its wait status."""
    if os.WIFSIGNALED(status):
        return f"child died of signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"child exited with status {os.waitstatus_to_exitcode(status)}, no report"


def live_threads(name: str) -> int:
    """Threads called ``name`` that exist in this process (not the parent's)."""
    tasks = {int(task) for task in os.listdir("/proc/self/task")}
    return sum(
        1
        for thread in threading.enumerate()
        if thread.name == name and thread.native_id in tasks
    )


def settle() -> None:
    """Let this process's other threads go back to sleep before a C fork."""
    time.sleep(0.2)
