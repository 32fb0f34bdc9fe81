"""The pools of this process, keyed by alias and connect-parameter fingerprint.

Pools are process-global because Django makes one DatabaseWrapper per thread
and per alias; a pool per wrapper would not be a pool. A forked child must
never use, close or even garbage-collect what it inherited: the sockets are
the parent's (and mysqlclient sends COM_QUIT when a connection is collected).
So the child forgets the parent's pools, keeps every inherited object alive
in ``_inherited``, and opens its own. Fork is noticed by ``os.register_at_fork``
and, for forks made from C (uWSGI), by comparing pids at each checkout.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pool import DatabasePool
    from .stats import PoolStats

logger = logging.getLogger("django_sapool")
_pools: dict[tuple[str, str], DatabasePool] = {}
_lock = threading.Lock()
_pid = os.getpid()
#: Connections lent right now, so the fork hooks can pin them (see _before_fork).
lent_connections: weakref.WeakSet[Any] = weakref.WeakSet()
_pinned: list[Any] = []
#: Everything a child inherited from its parent: kept alive, never touched.
_inherited: list[Any] = []
_fork_callbacks: list[Callable[[], None]] = []
#: Counters per alias: they outlive the alias's pools (see stats.py).
_stats: dict[str, PoolStats] = {}


def get_or_create(
    alias: str, fingerprint: str, factory: Callable[[], DatabasePool]
) -> DatabasePool:
    """Return this process's pool for the key, creating it at most once."""
    _check_pid()
    key = (alias, fingerprint)
    pool = _pools.get(key)
    if pool is not None:
        return pool
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = factory()
    return pool


def dispose(alias: str | None = None) -> None:
    """Drop the pools of ``alias`` (all if None); safe anywhere, including after fork.

    In the process that opened the connections, idle ones are closed and the
    next checkout starts a fresh pool; connections still lent are closed when
    they come back. In a forked child the inherited pools are forgotten without
    a byte sent on their sockets.
    """
    if _check_pid():
        return
    with _lock:
        doomed = [key for key in _pools if alias is None or key[0] == alias]
        pools = [_pools.pop(key) for key in doomed]
    for pool in pools:
        pool.retire()


def pools() -> list[DatabasePool]:
    """This process's current pools."""
    _check_pid()
    return list(_pools.values())


def stats_for(alias: str) -> PoolStats:
    """The counters of ``alias`` in this process."""
    _check_pid()
    stats = _stats.get(alias)
    if stats is None:
        from .stats import PoolStats  # stats.py reads the registry

        # Called under _lock (from a pool factory); setdefault is atomic.
        stats = _stats.setdefault(alias, PoolStats())
    return stats


def stats_aliases() -> list[str]:
    """Aliases that have had a pool in this process."""
    _check_pid()
    return list(_stats)


def fingerprint(*inputs: object) -> str:
    """A stable digest of connect inputs; the password goes in only as hash input."""
    return hashlib.sha256(repr(_canonical(inputs)).encode()).hexdigest()[:32]


def _canonical(value: object) -> object:
    if isinstance(value, dict):
        return sorted((repr(k), _canonical(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def keep_inherited(*objects: Any) -> None:
    """Hold objects from a parent process for the rest of this process's life.

    Including its exit: interpreter shutdown clears module globals, and a
    mysqlclient connection freed then would still send COM_QUIT on the
    parent's socket. A reference nobody owns keeps them from ever being freed.
    """
    for obj in objects:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    _inherited.extend(objects)


def on_fork_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in a child after the parent's pools are forgotten."""
    _fork_callbacks.append(callback)


def _check_pid() -> bool:
    """Forget the parent's pools if this is a forked child; True if it was."""
    if _pid == os.getpid():
        return False
    _forget_parent()
    return True


def _forget_parent() -> None:
    global _lock, _pid
    # The parent's lock may have been held by a thread that does not exist here.
    _lock = threading.Lock()
    _pid = os.getpid()
    keep_inherited(dict(_pools), list(_pinned), list(lent_connections))
    _pools.clear()
    _pinned.clear()
    _stats.clear()  # the child's own figures start now
    logger.info("Fork detected: process %d forgot its parent's pools", _pid)
    for callback in _fork_callbacks:
        callback()


def _before_fork() -> None:
    # In the child, threads other than the forking one vanish and the wrappers
    # in their thread-local storage become garbage. If the collector freed a
    # borrowed connection before _forget_parent() runs, SQLAlchemy would return
    # it to the parent's pool, taking a lock a vanished thread may hold. Pin.
    while True:
        try:
            _pinned[:] = list(lent_connections)
        except RuntimeError:  # another thread changed the set; try again
            continue
        return


def _after_fork_in_parent() -> None:
    _pinned.clear()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_forget_parent,
)
