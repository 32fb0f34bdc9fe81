"""At exit, close the idle connections of this process's pools.

A session whose client vanishes without a goodbye ends on the server as an
aborted connection (MariaDB's ``Aborted_clients``, PostgreSQL's
``sessions_abandoned``). A process that exits normally frees its pools and
their connections say goodbye as they go; a ``multiprocessing`` child (the
workers of ``manage.py test --parallel``, of a ``multiprocessing.Pool``)
leaves with ``os._exit()``, which frees nothing. So the first pool a process
makes registers ``close_idle`` with ``atexit`` and, in a ``multiprocessing``
child, with multiprocessing's own exit finalizers, which run before its
``os._exit()``.

``close_idle`` disposes through the registry, which first forgets, untouched,
whatever the process inherited from a parent (see _fork): a child closes
only what it opened. Connections still lent are left alone: another thread
may be using one.
"""

from __future__ import annotations

import atexit
import contextlib
import sys

from django.db import connections

from . import _fork, _registry

#: atexit's list is inherited by forked children: registered once in all.
_atexit_registered = False
#: This process has registered its hooks (a forked child registers anew).
_registered = False


def close_idle() -> None:
    """Give back the exiting thread's connections, then dispose this process's
    pools: their idle connections close now.

    The exiting thread may still hold one (a gunicorn master that queried
    while loading the app, a script): Django's close() gives it back as at
    the end of a request, or forgets it untouched if it was inherited.
    """
    with contextlib.suppress(Exception):  # exiting: nothing left to tell
        connections.close_all()
    with contextlib.suppress(Exception):
        _registry.dispose()


def register() -> None:
    """Close this process's idle connections when it exits; once per process."""
    global _atexit_registered, _registered
    if _registered:
        return
    _registered = True
    if not _atexit_registered:
        atexit.register(close_idle)
        _atexit_registered = True
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        # Runs when a multiprocessing child ends (before its os._exit); a
        # child starts with none of its parent's.
        mp_util.Finalize(None, close_idle, exitpriority=0)


def _forget_parent() -> None:
    global _registered
    _registered = False  # the child's first pool registers its own hooks


_fork.on_child(_forget_parent)
