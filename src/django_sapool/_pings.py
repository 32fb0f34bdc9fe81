"""The pool's pings and its other round trips, none unbounded.

``pre_ping=True`` pings a connection at every checkout unless it was opened
just now, as SQLAlchemy's own checkout does: a failed ping discards it with
every connection opened before it, and the slot connects again. With
``ping_timeout``, the watchdog cuts any of the pool's round trips (a ping, a
reset, Django's ``is_usable()`` check) that outlives it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy.exc

from ._watchdog import watchdog

if TYPE_CHECKING:
    from ._queue_pool import FastQueuePool
    from .config import PoolConfig


class Pings:
    """One pool's pings, through its dialect (which knows the driver's ping)."""

    def __init__(self, alias: str, config: PoolConfig, pool: FastQueuePool) -> None:
        self.alias = alias
        self._limit = config.ping_timeout
        self._pool = pool
        #: The driver's SQLAlchemy dialect: its ping and disconnect detection.
        self.dialect: Any = pool._dialect
        if config.pre_ping and self._limit is not None:
            self._bound(self.dialect)

    def bounded_call(self, connection: Any, what: str) -> int | None:
        """Start timing one of the pool's own round trips (see watchdog)."""
        limit = self._limit
        if limit is None:
            return None
        return watchdog.start(connection, limit, self.alias, what)

    def _bound(self, dialect: Any) -> None:
        """Time every ping: SQLAlchemy's and ours call the dialect's do_ping."""
        ping = dialect.do_ping

        def bounded_ping(connection: Any) -> Any:
            call = self.bounded_call(connection, "the pre-ping")
            try:
                alive = ping(connection)
            finally:
                cut = watchdog.finish(call)
            return alive and not cut  # cut: the socket is shut down

        dialect.do_ping = bounded_ping

    def at_checkout(self, record: Any, connection: Any) -> Any:
        """pre_ping=True: the record's connection, pinged unless fresh.

        ``record`` is SQLAlchemy's connection record (``fresh`` and
        ``get_connection()`` are not in its interface).
        """
        for _ in range(2):
            fresh, record.fresh = record.fresh, False
            if fresh or self.dialect._do_ping_w_event(connection):
                return connection
            error = sqlalchemy.exc.InvalidatePoolError()
            record.invalidate(error)
            self._pool.invalidate_older(record)
            connection = record.get_connection()
        record.invalidate()  # pragma: no cover - a fresh connection is not pinged
        raise sqlalchemy.exc.InvalidRequestError("This connection is closed")
