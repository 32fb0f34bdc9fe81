"""Connections never to be lent again: a lost server, a demoted primary.

A statement that fails because the connection was lost, or because the server
no longer takes writes (a primary demoted to a replica), says the same of
every connection opened before it: SQLAlchemy's pool-wide invalidation makes
the next checkout of each replace it (its engine does this for disconnects;
we bypass the engine). ``SELECT 1`` succeeds on a replica, so pre-ping alone
would never notice a demotion. Every discarded connection is logged and counted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._events import log_fields
from ._record_keys import INVALIDATED

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry

    from ._drivers import Driver
    from ._loan import Loan
    from ._queue_pool import FastQueuePool
    from .stats import PoolStats

logger = logging.getLogger("django_sapool")


class Unusable(Exception):
    """Why a connection was discarded when Django could no longer use it."""


class Failover:
    """One pool's watch for a server that went away or was demoted."""

    def __init__(
        self,
        alias: str,
        pool: FastQueuePool,
        driver: Driver,
        driver_error: type[Exception],
        stats: PoolStats,
    ) -> None:
        self.alias = alias
        self._pool = pool
        self._driver = driver
        self._driver_error = driver_error
        #: The driver's SQLAlchemy dialect: its disconnect detection.
        self._dialect: Any = pool._dialect
        self._stats = stats

    def statement_failed(self, loan: Loan, error: BaseException) -> None:
        """A statement of this loan failed: is it the server, not the statement?

        If so, every connection opened before this one is stale; this one is
        discarded when given back (is_stale). Nothing is retried: the request
        fails as it would without a pool. Only called on errors.
        """
        connection = loan.dbapi_connection
        if connection is None or not isinstance(error, self._driver_error):
            return
        refuses_writes = self._driver.refuses_writes(error, connection)
        if refuses_writes:
            reason = "the server no longer takes writes"
        elif self._dialect.is_disconnect(error, connection, None):
            reason = "the connection to the server was lost"
        else:
            return
        if self.is_stale(loan):
            return  # an invalidation after it opened covers it already
        self._pool.invalidate_older(loan.record)
        logger.warning(
            "Alias %r: %s (%s: %s); discarding every connection opened before "
            "now as it comes up for checkout",
            self.alias,
            reason,
            type(error).__name__,
            str(error).strip(),
            extra=log_fields(
                "failover_detected" if refuses_writes else "connection_discarded",
                self.alias,
                reason="refuses_writes" if refuses_writes else "lost",
                error=type(error).__name__,
            ),
        )

    def is_stale(self, loan: Loan) -> bool:
        """Opened before the pool's last pool-wide invalidation?"""
        record: Any = loan.record
        return bool(record.starttime < self._pool._invalidate_time)

    def on_invalidate(
        self, connection: Any, record: ConnectionPoolEntry, error: BaseException | None
    ) -> None:
        """SQLAlchemy's "invalidate" event: mark the slot, log and count why."""
        if record.record_info is not None:
            record.record_info[INVALIDATED] = True
        if error is None:  # a failed reset (logged) or a disposed pool's return
            return
        if isinstance(error, Unusable):
            reason = "unusable_after_error"  # counted in returns_bad
        else:
            reason = "lost"  # failed pre-ping, or a disconnect at checkout
            self._stats.add("connections_lost")
        logger.warning(
            "Alias %r: connection discarded, never to be lent again (%s: %s)",
            self.alias,
            type(error).__name__,
            error,
            extra=log_fields(
                "connection_discarded",
                self.alias,
                reason=reason,
                error=type(error).__name__,
            ),
        )
