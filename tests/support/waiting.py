"""Waiting for something to happen, and running threads at once.

``wait_until()`` is the suite's one polling loop: tests that wait for the
server to notice something (a closed session, a finished transaction), for a
worker to leave or a log line to appear call it rather than spelling out a
deadline. ``run_threads()`` and ``threads_running()`` start callables in
threads of their own and hand back what they raised, so that a failure in a
thread fails the test with its traceback.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    what: str | Callable[[], str] = "the condition",
    *,
    timeout: float = 5.0,
    interval: float = 0.02,
) -> T:
    """Call ``condition`` until it returns something true, and return that.

    It is called at least once, even with ``timeout=0``. Past ``timeout``
    seconds the test fails, naming ``what`` (a callable: called then, for
    details such as what is left).
    """
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            pytest.fail(f"not within {timeout} s: {detail}")
        time.sleep(interval)
    return result


@contextlib.contextmanager
def threads_running(
    targets: Iterable[Callable[[], object]], *, timeout: float | None = None
) -> Iterator[list[BaseException]]:
    """Start each target in a thread; join them all when the block ends.

    Yields the list of exceptions the threads raise (filled as they do).
    """
    errors: list[BaseException] = []

    def guarded(target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    try:
        yield errors
    finally:
        for thread in threads:
            thread.join(timeout)


def run_threads(
    targets: Iterable[Callable[[], object]], *, timeout: float | None = None
) -> list[BaseException]:
    """Run the targets in threads at once; what they raised, once all ended."""
    with threads_running(targets, timeout=timeout) as errors:
        pass
    return errors
