"""The pools of this process, keyed by alias and connect-parameter fingerprint.

Pools are process-global because Django makes one DatabaseWrapper per thread
and per alias; a pool per wrapper would not be a pool. A forked child must
never use, close or even garbage-collect what it inherited: the sockets are
the parent's (and mysqlclient sends COM_QUIT when a connection is collected).
So the child forgets the parent's pools, keeps every inherited object alive
in ``_inherited``, and opens its own. Fork is noticed by ``os.register_at_fork``
and, for forks made from C (uWSGI), by comparing pids at every entry point
(``check_fork``). A child forked from C may have several threads arrive at
once: the first does the move, once, and the others wait for it to finish.
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
#: The process the state here belongs to; a child sets it last in its move.
_pid = os.getpid()
#: A lock per process for its move out of the parent, made by the child's
#: first thread to notice (dict.setdefault is atomic): no thread of the
#: parent can hold it. Reentrant for callbacks that call back in.
_move_locks: dict[int, threading.RLock] = {}
#: The pid whose move is under way (a callback calling back in must not wait).
_moving = 0
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
    check_fork()
    pid = os.getpid()
    key = (alias, fingerprint)
    pool = _pools.get(key)
    if pool is not None and pool.pid == pid:
        return pool
    replaced: list[DatabasePool] = []
    with _lock:
        pool = _pools.get(key)
        if pool is not None and pool.pid != pid:  # never lend another's
            keep_inherited(pool)
            pool = None
        if pool is None:
            pool = _pools[key] = factory()
            # The alias now connects elsewhere (host, database, user, OPTIONS):
            # the server sees one pool's worth of sessions per alias, not one
            # per setting it ever had.
            stale = [k for k in _pools if k[0] == alias and k != key]
            replaced = [_pools.pop(k) for k in stale]
    for old in replaced:
        logger.info(
            "Alias %r: connect settings changed; the previous pool is retired", alias
        )
        old.retire()
    return pool


def dispose(alias: str | None = None) -> None:
    """Drop the pools of ``alias`` (all if None); safe anywhere, including after fork.

    In the process that opened the connections, idle ones are closed and the
    next checkout starts a fresh pool; connections still lent are closed when
    they come back. In a forked child the inherited pools are forgotten without
    a byte sent on their sockets.
    """
    check_fork()  # forgets what the parent had: only this process's are left
    with _lock:
        doomed = [key for key in _pools if alias is None or key[0] == alias]
        pools = [_pools.pop(key) for key in doomed]
    for pool in pools:
        pool.retire()


def pools() -> list[DatabasePool]:
    """This process's current pools."""
    check_fork()
    return list(_pools.values())


def stats_for(alias: str) -> PoolStats:
    """The counters of ``alias`` in this process."""
    check_fork()
    stats = _stats.get(alias)
    if stats is None:
        from .stats import PoolStats  # stats.py reads the registry

        # Called under _lock (from a pool factory); setdefault is atomic.
        stats = _stats.setdefault(alias, PoolStats())
    return stats


def stats_aliases() -> list[str]:
    """Aliases that have had a pool in this process."""
    check_fork()
    return list(_stats)


def fingerprint(*inputs: object) -> str:
    """A stable digest of connect inputs (the caller leaves the password out)."""
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
    """Run ``callback`` in a child once, during its move out of the parent.

    The parent's pools are forgotten by then, and no other thread of the
    child gets past ``check_fork`` until every callback has returned.
    """
    _fork_callbacks.append(callback)


def check_fork() -> None:
    """In a forked child, finish its move out of the parent before going on.

    Every entry point calls this first. The first thread to notice the fork
    makes the move, once; the others wait for it, so none can see the
    parent's pools or a half-made move.
    """
    pid = os.getpid()
    if _pid != pid:
        _move_to(pid)


def _move_to(pid: int) -> None:
    global _move_locks, _moving, _pid
    lock = _move_locks.setdefault(pid, threading.RLock())
    with lock:
        if _pid == pid or _moving == pid:  # done, or a callback called back
            return
        _move_locks = {pid: lock}  # a later child's pid may reuse an old one
        _moving = pid
        try:
            _forget_parent(pid)
        finally:
            _moving = 0
        _pid = pid  # last: threads that see it skip the lock


def _forget_parent(pid: int) -> None:
    global _lock
    # The parent's lock may have been held by a thread that does not exist here.
    _lock = threading.Lock()
    keep_inherited(dict(_pools), list(_pinned), list(lent_connections))
    _pools.clear()
    _pinned.clear()
    _stats.clear()  # the child's own figures start now
    logger.info("Fork detected: process %d forgot its parent's pools", pid)
    for callback in _fork_callbacks:
        try:
            callback()
        except Exception:  # the others must run all the same
            logger.exception("Fork detected: a fork callback failed")


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
    after_in_child=check_fork,
)
