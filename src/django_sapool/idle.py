"""Giving back the connections of threads Django's request cycle never closes.

Django closes a thread's connections at the end of each request, in the
request's own thread. Threads outside that cycle keep theirs between uses:
executor threads under ASGI (``sync_to_async(thread_sensitive=False)``),
worker threads of a task queue. Stock Django opens one connection per such
thread; a bounded pool runs dry instead. Taking a connection from another
thread is not safe (Django reads ``wrapper.connection`` without a lock, so a
query starting at that moment would run on a session lent to someone else),
so the thread itself gives it back, here, when its work is done.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import connections

from .wrapper import PooledDatabaseWrapperMixin

_P = ParamSpec("_P")
_R = TypeVar("_R")


def close_idle_connections(**signal_arguments: object) -> None:
    """Give this thread's idle connections back to their pools.

    Idle means outside any atomic block, in autocommit: giving it back loses
    nothing. A connection in a transaction is left alone (a task run at once
    inside a request's ``atomic()`` must not end the request's transaction).
    Aliases on other backends get what Django does at the end of a request.
    Takes a signal's arguments, to be connected as a receiver; sent by
    Django's immediate task backend, which runs the task inside its caller
    (a request, say), it does nothing: the caller's connection stays its own.
    """
    if _sent_by_the_immediate_backend(signal_arguments.get("sender")):
        return
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            continue
        if not isinstance(connection, PooledDatabaseWrapperMixin):
            connection.close_if_unusable_or_obsolete()
        elif connection.connection is not None and connection.get_autocommit():
            connection.close()


def _sent_by_the_immediate_backend(sender: object) -> bool:
    if sender is None:
        return False
    try:  # Django 6.0 and later
        from django.tasks.backends.immediate import ImmediateBackend
    except ImportError:
        return False
    return sender is ImmediateBackend


def closes_idle_connections(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """``func``, then ``close_idle_connections()`` in the same thread.

    For work handed to threads that outlive it::

        await sync_to_async(closes_idle_connections(report), thread_sensitive=False)()
    """

    @functools.wraps(func)
    def run_then_close(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        finally:
            close_idle_connections()

    return run_then_close
