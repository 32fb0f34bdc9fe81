"""One SQLAlchemy QueuePool serving one alias and one set of connect parameters.

The pool never builds a connection itself: its creator calls Django's own
``get_new_connection()`` on the wrapper that is checking out, in that wrapper's
thread, with that checkout's parameters. Nothing is copied from Django and no
wrapper is captured.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import sqlalchemy.exc
from sqlalchemy import create_pool_from_url, event
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from . import registry
from .config import PoolConfig
from .errors import PoolTimeout, ServerUnavailable
from .gate import ConnectGate, Unreachable
from .leaks import LeakWatch
from .watchdog import watchdog

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry

    from .reset import Session

logger = logging.getLogger("django_sapool")

#: record.info keys. INITIALISED: Django's per-connection setup has run on this
#: physical connection (cleared by a "discard" reset, which undoes it). RESET:
#: release() has reset the connection, so the checkin hook has nothing to do.
INITIALISED = "django_sapool.initialised"
RESET = "django_sapool.reset"
#: record.record_info keys (they outlive reconnects of one pool slot).
#: OPENED: this slot has had a connection; INVALIDATED: it was invalidated, so
#: its next connection replaces a broken one rather than recycling an old one.
OPENED = "django_sapool.opened"
INVALIDATED = "django_sapool.invalidated"


class Borrower(Protocol):
    """The part of a pooled DatabaseWrapper the pool talks to."""

    alias: str
    sapool_carried_attrs: ClassVar[tuple[str, ...]]

    def sapool_open_connection(self, conn_params: dict[str, Any]) -> Any: ...


class DatabasePool:
    """A QueuePool for one alias and connect-parameter set, owned by one process."""

    def __init__(
        self,
        *,
        alias: str,
        config: PoolConfig,
        dialect_url: str,
        session: Session,
        timeout_error: type[PoolTimeout],
        unavailable_error: type[ServerUnavailable],
        description: str,
    ) -> None:
        self.alias = alias
        self.config = config
        self.session = session
        self.description = description
        self.pid = os.getpid()
        self.retired = False
        #: Wrapper attributes Django's connect code set while opening the first
        #: connection (PostgreSQL's isolation_level); the same for every
        #: connection of this pool, given to every borrower.
        self.carried: dict[str, Any] = {}
        self._connecting = threading.local()
        # A QueuePool with the driver's real dialect: its ping and its
        # disconnect detection (a bare QueuePool cannot pre-ping).
        pool = create_pool_from_url(
            dialect_url,
            poolclass=QueuePool,
            creator=self._open,
            pool_size=config.pool_size,
            max_overflow=config.max_overflow,
            timeout=config.timeout,
            recycle=config.recycle,
            pre_ping=config.pre_ping,
            # Checkin is ours (see release): SQLAlchemy's rollback is unconditional.
            reset_on_return=None,
            use_lifo=config.use_lifo,
        )
        assert isinstance(pool, QueuePool)
        self._pool = pool
        # Only for connections whose borrower was garbage-collected: release()
        # handles every other return, without the cost of a "reset" event.
        event.listen(self._pool, "checkin", self._on_checkin)
        event.listen(self._pool, "invalidate", self._on_invalidate)
        self._timeout_error = timeout_error
        self._unavailable_error = unavailable_error
        self._gate = ConnectGate(alias, config.unreachable_wait)
        if config.pre_ping and config.ping_timeout is not None:
            self._bound_pings(self._pool._dialect)
        self.stats = registry.stats_for(alias)
        self._leaks = (
            LeakWatch(alias, config.leak_timeout) if config.leak_timeout else None
        )
        self._prewarm_pending = config.prewarm > 1
        logger.info("Pool created for alias %r (%s): %s", alias, description, config)

    def __repr__(self) -> str:
        return f"<DatabasePool alias={self.alias!r} {self.description} {self.status()}>"

    def status(self) -> str:
        return self._pool.status()

    def gauges(self) -> dict[str, int]:
        """What this pool holds right now (see stats.GAUGES)."""
        pool, config = self._pool, self.config
        checked_out = pool.checkedout()
        # Idle slots whose connection was invalidated hold no connection.
        queue = getattr(pool._pool, "queue", None)
        if queue is None:  # pragma: no cover - SQLAlchemy's Queue changed
            idle = pool.checkedin()
        else:
            idle = sum(1 for record in list(queue) if record.dbapi_connection)
        return {
            "pool_size": config.pool_size,
            "pool_max": config.pool_size + config.max_overflow,
            "connections_open": checked_out + idle,
            "checked_out": checked_out,
            "idle": idle,
            "overflow": max(0, pool.overflow()),
        }

    def checkout(
        self, borrower: Borrower, conn_params: dict[str, Any]
    ) -> PoolProxiedConnection:
        """Lend a connection; a new one is opened by ``borrower`` if needed."""
        stats = self.stats
        failure: str | None = "requests_errors"
        stats.checkout_started()
        started = time.monotonic()
        self._connecting.borrower = (borrower, conn_params, started)
        try:
            fairy = self._pool.connect()
            failure = None
            if self._prewarm_pending:
                self._prewarm()
        except sqlalchemy.exc.TimeoutError:
            failure = "requests_timeouts"
            error = self._exhausted(time.monotonic() - started)
            logger.warning("%s", error)
            raise error from None
        finally:
            self._connecting.borrower = None
            stats.checkout_ended((time.monotonic() - started) * 1000, failure)
        registry.lent_connections.add(fairy)
        if self._leaks is not None:
            self._leaks.lent(fairy)
        logger.debug("Checked out: %r", self)
        return fairy

    def release(self, fairy: PoolProxiedConnection, *, discard: bool) -> None:
        """Take a connection back: reset it for reuse, or close it for good.

        Only for connections lent by this process (the wrapper checks).
        """
        registry.lent_connections.discard(fairy)
        if self._leaks is not None:
            self._leaks.returned(fairy)
        if discard:
            fairy.invalidate(_Unusable("Django found it unusable after an error"))
        elif self.retired or not self._reset(fairy.dbapi_connection, fairy.info):
            fairy.invalidate()
        else:
            fairy.info[RESET] = True
            fairy.close()
        logger.debug("Checked in: %r", self)

    def retire(self) -> None:
        """Close idle connections; those still lent are closed when returned."""
        self.retired = True
        if self.pid == os.getpid():
            self._pool.dispose()
        logger.info("Pool disposed for alias %r (%s)", self.alias, self.description)

    def _open(self, record: ConnectionPoolEntry) -> Any:
        borrower_and_params = getattr(self._connecting, "borrower", None)
        if borrower_and_params is None:
            raise RuntimeError("django_sapool pools open connections only at checkout")
        borrower, conn_params, checkout_started = borrower_and_params
        try:
            probe = self._gate.enter(checkout_started)
        except Unreachable as verdict:
            raise self._unavailable_error(str(verdict)) from None
        started = time.monotonic()
        try:
            connection = borrower.sapool_open_connection(conn_params)
        except BaseException as exc:
            self.stats.add("connections_errors")
            self._gate.failed(probe, started, exc)
            raise
        self._gate.succeeded(probe)
        stats, slot = self.stats, record.record_info
        assert slot is not None
        stats.add("connections_num")
        stats.add("connections_ms", (time.monotonic() - started) * 1000)
        if slot.get(OPENED) and not slot.pop(INVALIDATED, False):
            stats.add("connections_recycled")
        slot[OPENED] = True
        self._jitter_age(record)
        record.info[INITIALISED] = False
        if not self.carried:
            self.carried = {
                name: getattr(borrower, name) for name in borrower.sapool_carried_attrs
            }
        logger.debug("New connection for alias %r (%s)", self.alias, self.description)
        return connection

    def bounded_call(self, connection: Any, what: str) -> int | None:
        """Start timing one of the pool's own round trips (see watchdog)."""
        limit = self.config.ping_timeout
        if limit is None:
            return None
        return watchdog.start(connection, limit, self.alias, what)

    def _bound_pings(self, dialect: Any) -> None:
        """Time SQLAlchemy's pre-ping: it calls this pool's own dialect's do_ping."""
        ping = dialect.do_ping

        def bounded_ping(connection: Any) -> Any:
            call = self.bounded_call(connection, "the pre-ping")
            try:
                return ping(connection)
            finally:
                watchdog.finish(call)

        dialect.do_ping = bounded_ping

    def _jitter_age(self, record: ConnectionPoolEntry) -> None:
        """Make a new connection look up to recycle * recycle_jitter older.

        SQLAlchemy recycles a connection at checkout once ``time.time() -
        starttime`` exceeds ``recycle``; an earlier start, drawn per
        connection, spreads the replacement of connections opened together.
        """
        config = self.config
        if config.recycle <= 0 or not config.recycle_jitter:
            return
        shift = random.uniform(0, config.recycle * config.recycle_jitter)
        # Not before a pool-wide invalidation (a detected disconnect): the
        # connection would look older than it and be replaced needlessly.
        invalidated_at = self._pool._invalidate_time
        entry: Any = record  # starttime is SQLAlchemy's, not in its interface
        if invalidated_at:
            shift = min(shift, max(0.0, entry.starttime - invalidated_at - 0.001))
        entry.starttime -= shift

    def _prewarm(self) -> None:
        """At the first checkout, open connections up to ``prewarm``."""
        self._prewarm_pending = False
        extra: list[PoolProxiedConnection] = []
        try:
            # Held together, so that each connect opens a new connection.
            while len(extra) + 1 < self.config.prewarm:
                extra.append(self._pool.connect())
        except Exception as exc:  # a warm-up failure must not fail the request
            logger.warning(
                "Alias %r: pre-warming stopped after %d extra connections (%s: %s)",
                self.alias,
                len(extra),
                type(exc).__name__,
                exc,
            )
        for fairy in extra:
            fairy.info[RESET] = True  # fresh: nothing to reset
            fairy.close()

    def _reset(self, connection: Any, info: dict[str, Any]) -> bool:
        """Ready a returned connection for its next borrower; False if it cannot be."""
        mode = self.config.reset_on_return
        call = None
        try:
            if mode != "discard" and self.session.in_transaction(connection) is False:
                return True  # the usual case: nothing to send, nothing to time
            if mode is None:
                self.stats.add("reset_failures")
                logger.warning(
                    "Alias %r: connection returned inside a transaction with "
                    "reset_on_return=None; closing it instead of pooling it",
                    self.alias,
                )
                return False
            # A round trip: time it, but never cut a commit short (the client
            # could not tell whether it happened).
            if mode != "commit":
                call = self.bounded_call(connection, "a reset")
            if mode == "discard":
                self.session.discard(connection)
                info[INITIALISED] = False
            else:
                self.session.end_transaction(connection, commit=mode == "commit")
        except Exception as exc:
            self.stats.add("reset_failures")
            logger.warning(
                "Alias %r: resetting a returned connection failed (%s: %s); closing it",
                self.alias,
                type(exc).__name__,
                exc,
            )
            return False
        finally:
            watchdog.finish(call)
        return True

    def _on_checkin(self, connection: Any, record: ConnectionPoolEntry) -> None:
        # Not reset by release(): its borrower was garbage-collected holding it
        # (say, a thread that ended without closing). Reset it here or drop it;
        # never in a forked child, where the socket is the parent's.
        if record.info.pop(RESET, False) or connection is None:
            return
        if self.pid == os.getpid() and not self._reset(connection, record.info):
            record.invalidate()

    def _on_invalidate(
        self, connection: Any, record: ConnectionPoolEntry, error: BaseException | None
    ) -> None:
        if record.record_info is not None:
            record.record_info[INVALIDATED] = True
        if error is None:  # a failed reset (logged) or a disposed pool's return
            return
        self.stats.add("connections_invalidated")
        logger.warning(
            "Alias %r: connection discarded, never to be lent again (%s: %s)",
            self.alias,
            type(error).__name__,
            error,
        )

    def _exhausted(self, waited: float) -> PoolTimeout:
        config = self.config
        message = (
            f"No connection available for database alias {self.alias!r} after "
            f"waiting {waited:.2f} s (timeout={config.timeout:g}): "
            f"pool_size={config.pool_size}, max_overflow={config.max_overflow}, "
            f"{self._pool.checkedout()} checked out."
        )
        return self._timeout_error(message)


class _Unusable(Exception):
    """Why a connection was discarded when Django could no longer use it."""


def describe(conn_params: Mapping[str, Any]) -> str:
    """A loggable summary of connect parameters; never includes the password."""
    parts = []
    for label, keys in (
        ("db", ("dbname", "database", "db")),
        ("user", ("user",)),
        ("host", ("host", "unix_socket")),
        ("port", ("port",)),
    ):
        value = next((conn_params[k] for k in keys if conn_params.get(k)), None)
        if value is not None:
            parts.append(f"{label}={value}")
    return " ".join(parts) or "default connection"
