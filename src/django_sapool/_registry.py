"""This process's pools, keyed by alias and connect-parameter fingerprint.

Pools are process-global because Django makes one DatabaseWrapper per thread
and per alias; a pool per wrapper would not be a pool. A forked child forgets
its parent's pools (kept alive, untouched: see _fork) and opens its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _fork
from ._events import log_fields

if TYPE_CHECKING:
    from ._pool import DatabasePool

logger = logging.getLogger("django_sapool")
_pools: dict[tuple[str, str], DatabasePool] = {}
_lock = threading.Lock()


def get_or_create(
    alias: str, fingerprint: str, factory: Callable[[], DatabasePool]
) -> DatabasePool:
    """Return this process's pool for the key, creating it at most once."""
    _fork.check()
    key = (alias, fingerprint)
    pool = _pools.get(key)
    if pool is not None and not _fork.inherited(pool.pid):
        return pool
    replaced: list[DatabasePool] = []
    with _lock:
        pool = _pools.get(key)
        if pool is not None and _fork.inherited(pool.pid):  # never lend another's
            _fork.keep_forever(pool)
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
            "Alias %r: connect settings changed; the previous pool is disposed",
            alias,
            extra=log_fields("pool_replaced", alias),
        )
        old.dispose()
    return pool


def dispose(alias: str | None = None) -> None:
    """Drop the pools of ``alias`` (all if None); safe anywhere, including after fork.

    In the process that opened the connections, idle ones are closed and the
    next checkout starts a fresh pool; connections still lent are closed when
    they come back. In a forked child the inherited pools are forgotten without
    a byte sent on their sockets.
    """
    _fork.check()  # forgets what the parent had: only this process's are left
    with _lock:
        doomed = [key for key in _pools if alias is None or key[0] == alias]
        pools = [_pools.pop(key) for key in doomed]
    for pool in pools:
        pool.dispose()


def pools() -> list[DatabasePool]:
    """This process's current pools."""
    _fork.check()
    return list(_pools.values())


def _forget_parent() -> None:
    global _lock
    # The parent's lock may have been held by a thread that does not exist here.
    _lock = threading.Lock()
    _fork.keep_forever(dict(_pools))
    _pools.clear()


_fork.on_child(_forget_parent)
