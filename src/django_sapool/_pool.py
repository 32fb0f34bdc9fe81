"""One SQLAlchemy QueuePool serving one alias and one set of connect parameters.

The pool never builds a connection itself: its creator calls Django's own
``get_new_connection()`` on the wrapper that is checking out, in that wrapper's
thread, with that checkout's parameters. Nothing is copied from Django and no
wrapper is captured.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from threading import get_ident
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import sqlalchemy.exc
from sqlalchemy import create_pool_from_url, event
from sqlalchemy.pool import PoolProxiedConnection, QueuePool
from sqlalchemy.util import queue as sqla_queue

from . import _fork
from ._events import log_fields
from ._gate import ConnectGate, Unreachable
from ._leaks import LeakWatch
from ._reaper import reaper
from ._watchdog import watchdog
from .config import PoolConfig
from .errors import PoolTimeout, ServerUnavailable
from .stats import FOLD_AT, stats_for

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry

    from ._drivers import Driver

logger = logging.getLogger("django_sapool")

#: record.info keys. INITIALISED: Django's per-connection setup has run on this
#: physical connection (cleared by a "discard" reset, which undoes it). RESET:
#: release() has reset the connection, so the checkin hook has nothing to do.
INITIALISED = "django_sapool.initialised"
RESET = "django_sapool.reset"
#: When release() gave the connection back (time.monotonic()), kept only
#: when pre_ping is a number of seconds: how long it has sat idle.
RETURNED = "django_sapool.returned"
#: record.record_info keys (they outlive reconnects of one pool slot).
#: OPENED: this slot has had a connection; INVALIDATED: it was invalidated, so
#: its next connection replaces a broken one rather than recycling an old one.
OPENED = "django_sapool.opened"
INVALIDATED = "django_sapool.invalidated"
#: record.info key, only while a listener is registered: (listeners, when lent).
LENT_AT = "django_sapool.lent_at"
#: record.info key: (borrowing thread's ident, when lent), for the report an
#: exhausted pool gives of who holds its connections.
BORROWED = "django_sapool.borrowed"


#: What the reaper logs about a connection given back without release().
_COLLECTED = (
    "Alias %r: a connection was never given back: its borrower (a "
    "thread that ended without closing it?) was garbage-collected; "
    "the connection was closed and its pool slot freed"
)
_ENDED_CLOSED = (
    "Alias %r: thread %r ended without closing its connection, leaving a "
    "transaction, an error or a cursor behind; the connection was closed and "
    "its pool slot freed"
)
_ENDED_REUSED = (
    "Alias %r: thread %r ended without closing its connection; it went back to the pool"
)


class Borrower(Protocol):
    """The part of a pooled DatabaseWrapper the pool talks to."""

    alias: str
    sapool_carried_attrs: ClassVar[tuple[str, ...]]

    def sapool_open_connection(self, conn_params: dict[str, Any]) -> Any: ...


class PoolListener(Protocol):
    """Told of each pool event that metrics need (OpenTelemetry, Prometheus).

    Called in the thread of the event, synchronously: cheap calls only.
    ``failure`` is None, "requests_errors" or "requests_timeouts".
    """

    def checkout_ended(
        self, pool: DatabasePool, waited: float, failure: str | None
    ) -> None: ...

    def connected(self, pool: DatabasePool, seconds: float) -> None: ...

    def returned(self, pool: DatabasePool, used: float) -> None: ...


def add_listener(listener: PoolListener) -> None:
    """From now on, every pool of the process tells ``listener`` (once)."""
    if listener not in DatabasePool.listeners:
        DatabasePool.listeners = (*DatabasePool.listeners, listener)


def remove_listener(listener: PoolListener) -> None:
    DatabasePool.listeners = tuple(
        known for known in DatabasePool.listeners if known is not listener
    )


class DatabasePool:
    """A QueuePool for one alias and connect-parameter set, owned by one process."""

    #: Every pool's listeners (add_listener). Empty, the usual case, the
    #: hooks cost one attribute check per checkout and per return.
    listeners: ClassVar[tuple[PoolListener, ...]] = ()

    def __init__(
        self,
        *,
        alias: str,
        config: PoolConfig,
        dialect_url: str,
        driver: Driver,
        timeout_error: type[PoolTimeout],
        unavailable_error: type[ServerUnavailable],
        driver_error: type[Exception],
        description: str,
        probe_limit: float,
    ) -> None:
        self.alias = alias
        self.config = config
        self.driver = driver
        self.description = description
        self.pid = os.getpid()
        self.disposed = False
        #: What a wrapper holds once it has given its connection back (set by
        #: the wrapper that makes the pool; it acts as a closed connection).
        self.stand_in: Any = None
        #: Wrapper attributes Django's connect code set while opening the first
        #: connection (PostgreSQL's isolation_level); the same for every
        #: connection of this pool, given to every borrower.
        self.carried: dict[str, Any] = {}
        self._connecting = threading.local()
        # A waiting checkout looks up every `_wait_slice` seconds: while the
        # server is failing (see _gate), waiting the full timeout for a
        # connection to come back would only delay the same failure.
        self._wait_slice = _wait_slice(config.timeout, config.unreachable_wait)
        # A QueuePool with the driver's real dialect: its ping and its
        # disconnect detection (a bare QueuePool cannot pre-ping).
        pool = create_pool_from_url(
            dialect_url,
            poolclass=_QueuePool,
            creator=self._open,
            pool_size=config.pool_size,
            max_overflow=config.max_overflow,
            timeout=self._wait_slice,
            recycle=config.recycle,
            # True: SQLAlchemy's ping at every checkout. A number of seconds:
            # ours, only for connections idle that long (see _ping_if_idle).
            pre_ping=config.pre_ping is True,
            # Checkin is ours (see release): SQLAlchemy's rollback is unconditional.
            reset_on_return=None,
            use_lifo=config.use_lifo,
        )
        assert isinstance(pool, _QueuePool)
        pool.returned_unreset = self._returned_unreset
        self._pool = pool
        # The idle connections: a checkout that finds none is "queued".
        self._idle: Any = getattr(pool._pool, "queue", (None,))
        event.listen(self._pool, "invalidate", self._on_invalidate)
        self._reset_mode = config.reset_on_return
        self._timeout_error = timeout_error
        self._unavailable_error = unavailable_error
        #: What a failed reset may raise and still be ours to handle; anything
        #: else (an exception from a signal handler) is the caller's.
        self._reset_errors = (driver_error, OSError)
        self._driver_error = driver_error
        #: pre_ping as seconds: ping a connection idle at least this long.
        self._ping_idle: float | None = (
            None if isinstance(config.pre_ping, bool) else float(config.pre_ping)
        )
        self._gate = ConnectGate(alias, config.unreachable_wait, probe_limit)
        #: The driver's SQLAlchemy dialect: its ping and disconnect detection.
        self._dialect: Any = self._pool._dialect
        if config.pre_ping and config.ping_timeout is not None:
            self._bound_pings(self._dialect)
        self.stats = stats_for(alias)
        self.stats.config = config
        self._leaks = (
            LeakWatch(alias, config.leak_timeout) if config.leak_timeout else None
        )
        self._prewarm_pending = config.prewarm > 1
        reaper.start()
        logger.info(
            "Pool created for alias %r (%s): %s",
            alias,
            description,
            config,
            extra=log_fields("pool_created", alias),
        )

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
            "pool_min": config.pool_size,
            "pool_max": config.pool_max,
            "pool_size": checked_out + idle,
            "pool_available": idle,
            "pool_used": checked_out,
            "pool_overflow": max(0, pool.overflow()),
        }

    def checkout(
        self, borrower: Borrower, conn_params: dict[str, Any]
    ) -> PoolProxiedConnection:
        """Lend a connection; a new one is opened by ``borrower`` if needed."""
        stats = self.stats
        failure: str | None = "requests_errors"
        stats.waiting.append(None)
        if not self._idle:  # no idle connection when it began: it queues
            stats.add("requests_queued")
        started = time.monotonic()
        self._connecting.borrower = (borrower, conn_params, started)
        try:
            try:
                proxied = self._pool.connect()
            except sqlalchemy.exc.TimeoutError:
                proxied = self._wait_for_connection(started)
            limit = self._ping_idle
            if limit is not None:  # inline: the default runs it per checkout
                returned = proxied.info.get(RETURNED)
                if returned is not None and started - returned >= limit:
                    proxied = self._ping_if_idle(proxied, started)
            failure = None
            if self._prewarm_pending:
                self._prewarm()
        except sqlalchemy.exc.TimeoutError:
            failure = "requests_timeouts"
            error = self._exhausted(time.monotonic() - started)
            logger.warning("%s", error, extra=log_fields("pool_exhausted", self.alias))
            raise error from None
        except BaseException as exc:
            raise _from_the_creator(exc)  # noqa: B904 - the same exception
        finally:
            self._connecting.borrower = None
            ended = time.monotonic()
            stats.waiting.pop()
            waits = stats.waits
            waits.append(ended - started)
            if failure is not None or len(waits) >= FOLD_AT:
                stats.checkout_ended(failure)
            listeners = self.listeners
            if listeners:
                for listener in listeners:
                    listener.checkout_ended(self, ended - started, failure)
        info = proxied.info
        info[BORROWED] = (get_ident(), ended)
        if listeners:
            info[LENT_AT] = (listeners, ended)
        _fork.lent[id(proxied)] = weakref.ref(proxied)
        if self._leaks is not None:
            self._leaks.lent(proxied)
        return proxied

    def _wait_for_connection(self, started: float) -> PoolProxiedConnection:
        """After a first wait for a free connection timed out, wait the rest.

        QueuePool waits in slices: a checkout that finds no idle connection
        while connects fail, since it began, gives up at the end of its slice
        (ServerUnavailable) instead of after the whole timeout.
        """
        deadline = started + self.config.timeout
        while True:
            if self._gate.failed_since(started):
                message = self._gate.no_idle_message(time.monotonic() - started)
                raise self._unavailable_error(message)
            if deadline - time.monotonic() < self._wait_slice / 2:
                raise sqlalchemy.exc.TimeoutError()  # checkout(): PoolTimeout
            try:
                return self._pool.connect()
            except sqlalchemy.exc.TimeoutError:
                continue

    def release(
        self,
        proxied: PoolProxiedConnection,
        discard: bool,
        cursors: list[weakref.ref[Any]] | tuple[()] = (),
        named_cursors: bool = False,
        rollback_only: bool = False,
    ) -> None:
        """Take a connection back: reset it for reuse, or close it for good.

        ``cursors`` are weak references to the driver cursors made during the
        loan: each still alive is closed first, so none can run on the next
        borrower's session.
        ``rollback_only``: the borrower abandoned its transaction (close()
        inside atomic()), so it is rolled back even with reset "commit".
        Only for connections lent by this process (the wrapper checks).
        """
        _fork.lent.pop(id(proxied), None)
        if self.listeners:
            self._report_return(proxied)
        if self._leaks is not None:
            self._leaks.returned(proxied)
        if discard:
            self.stats.add("returns_bad")
            proxied.invalidate(_Unusable("Django found it unusable after an error"))
            return
        info = proxied.info
        try:
            reusable = not self.disposed and self._reset(
                proxied.dbapi_connection, info, cursors, named_cursors, rollback_only
            )
        except BaseException:
            proxied.invalidate()  # interrupted mid-reset: its state is unknown
            raise
        if reusable:
            info[RESET] = True
            if self._ping_idle is not None:
                info[RETURNED] = time.monotonic()
            proxied.close()
        else:
            if not self.disposed:
                self.stats.add("returns_bad")
            proxied.invalidate()

    def _report_return(self, proxied: PoolProxiedConnection) -> None:
        """Tell the listeners how long the connection was lent."""
        lent = proxied.info.pop(LENT_AT, None)
        listeners = self.listeners
        if lent is None or lent[0] is not listeners:
            return  # lent before these listeners came: its loan is unknown
        used = time.monotonic() - lent[1]
        for listener in listeners:
            listener.returned(self, used)

    def reclaim(
        self,
        proxied: PoolProxiedConnection,
        cursors: list[weakref.ref[Any]],
        clean: bool,
        thread: str,
    ) -> None:
        """Take back the loan of a thread that ended without giving it back.

        Called from a finaliser (see _threads): nothing is sent to the server
        and nothing is logged here. A connection its borrower left idle
        (``clean``: no error, no named cursor, every cursor closed, no
        transaction open, as the client library knows without asking) goes
        back to the pool as it is; any other is closed by the reaper thread,
        and its slot is free at once.
        """
        _fork.lent.pop(id(proxied), None)
        if self._leaks is not None:
            self._leaks.returned(proxied)
        connection = proxied.dbapi_connection
        driver = self.driver
        reusable = (
            clean
            and not self.disposed
            and self._reset_mode != "discard"
            and connection is not None
            and not driver.is_broken(connection)
            and all(
                (cursor := ref()) is None or driver.cursor_is_closed(cursor)
                for ref in cursors
            )
            and driver.in_transaction(connection) is False
        )
        if reusable:
            reaper.log_later(logging.INFO, _ENDED_REUSED, self.alias, thread)
        else:  # its slot is freed now; the reaper closes it
            record: Any = proxied._connection_record
            self._returned_unreset(record, ended=thread)
        proxied.info[RESET] = True  # ready as it is, or holding no connection
        proxied.close()

    def dispose(self) -> None:
        """Close idle connections; those still lent are closed when returned."""
        self.disposed = True
        if not _fork.inherited(self.pid):
            self._pool.dispose()
        logger.info(
            "Pool disposed for alias %r (%s)",
            self.alias,
            self.description,
            extra=log_fields("pool_disposed", self.alias),
        )

    def _open(self, record: ConnectionPoolEntry) -> Any:
        borrower_and_params = getattr(self._connecting, "borrower", None)
        if borrower_and_params is None:
            raise RuntimeError("django_sapool pools open connections only at checkout")
        borrower, conn_params, checkout_started = borrower_and_params
        started = 0.0

        def connect() -> Any:
            nonlocal started
            started = time.monotonic()
            return borrower.sapool_open_connection(conn_params)

        try:
            connection = self._gate.run(checkout_started, connect)
        except Unreachable as verdict:
            raise self._unavailable_error(str(verdict)) from None
        except BaseException:
            if started:  # an attempt was made (the gate may have said no first)
                self.stats.add("connections_num")
                self.stats.add("connections_errors")
            raise
        took = time.monotonic() - started
        stats, slot = self.stats, record.record_info
        assert slot is not None
        stats.add("connections_num")
        stats.add("connections_ms", took * 1000)
        for listener in self.listeners:
            listener.connected(self, took)
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

    def _ping_if_idle(
        self, proxied: PoolProxiedConnection, started: float
    ) -> PoolProxiedConnection:
        """pre_ping as seconds: ping a connection that sat idle that long.

        A busy pool pays a dictionary lookup per checkout and sends nothing;
        a connection that sat idle through a restart is pinged and, if dead,
        replaced, along with every connection opened before it (as
        SQLAlchemy's own pre-ping does), before the borrower sees it. A fresh
        connection (no RETURNED) is never pinged.
        """
        limit = self._ping_idle
        assert limit is not None
        while True:
            returned = proxied.info.get(RETURNED)
            if returned is None or started - returned < limit:
                return proxied
            del proxied.info[RETURNED]  # pinged once per idle spell
            error: BaseException = _Unusable("the pre-ping was cut off")
            try:
                alive = self._dialect.do_ping(proxied.dbapi_connection)
            except self._reset_errors as exc:
                alive, error = False, exc
            except BaseException:  # interrupted (a signal): state unknown
                proxied.invalidate()
                raise
            if alive:
                return proxied
            logger.warning(
                "Alias %r: the pre-ping of a connection idle %.1f s failed; "
                "replacing every connection opened before it",
                self.alias,
                started - returned,
                extra=log_fields("connection_discarded", self.alias, reason="lost"),
            )
            # Invalidates it (logged, counted) and gives its slot back.
            self._pool._invalidate(proxied, error)
            proxied = self._wait_for_connection(started)

    def statement_failed(
        self, proxied: PoolProxiedConnection, error: BaseException
    ) -> None:
        """A statement of this loan failed: is it the server, not the statement?

        After a disconnect, or a write the server refuses because it no
        longer takes writes (a demoted primary), every connection opened
        before this one is as stale: SQLAlchemy's pool-wide invalidation makes
        the next checkout of each replace it (the engine does this for
        disconnects; we bypass the engine). This one is discarded when given
        back (is_stale). Nothing is retried: the request fails as it would
        without a pool. Only called on errors.
        """
        connection = proxied.dbapi_connection
        if connection is None or not isinstance(error, self._driver_error):
            return
        refuses_writes = self.driver.refuses_writes(error, connection)
        if refuses_writes:
            reason = "the server no longer takes writes"
        elif self._dialect.is_disconnect(error, connection, None):
            reason = "the connection to the server was lost"
        else:
            return
        if self.is_stale(proxied):
            return  # an invalidation after it opened covers it already
        self._pool._invalidate(proxied, error, _checkin=False)
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

    def is_stale(self, proxied: PoolProxiedConnection) -> bool:
        """Opened before the pool's last pool-wide invalidation?"""
        record: Any = getattr(proxied, "_connection_record", None)
        return record is not None and record.starttime < self._pool._invalidate_time

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
                alive = ping(connection)
            finally:
                cut = watchdog.finish(call)
            return alive and not cut  # cut: the socket is shut down

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
        """At the first checkout, open connections up to ``prewarm``.

        Only into free capacity: each new connection goes straight into the
        pool as idle, and warming stops, never waits, once the pool holds
        pool_size connections (other requests may have taken them meanwhile).
        """
        self._prewarm_pending = False
        pool, opened = self._pool, 0
        try:
            while opened + 1 < self.config.prewarm and pool.overflow() < 0:
                if not pool._inc_overflow():
                    break
                try:
                    record = pool._create_connection()
                except BaseException:
                    pool._dec_overflow()
                    raise
                record.info[RESET] = True  # fresh: nothing to reset
                record.info[RETURNED] = time.monotonic()
                pool._do_return_conn(record)
                opened += 1
        except Exception as exc:  # a warm-up failure must not fail the request
            logger.warning(
                "Alias %r: pre-warming stopped after %d extra connections (%s: %s)",
                self.alias,
                opened,
                type(exc).__name__,
                exc,
            )

    def _reset(
        self,
        connection: Any,
        info: dict[str, Any],
        cursors: list[weakref.ref[Any]] | tuple[()] = (),
        named_cursors: bool = False,
        rollback_only: bool = False,
    ) -> bool:
        """Ready a returned connection for its next borrower; False if it cannot be."""
        if named_cursors or self._reset_mode == "discard":
            return self._reset_fully(
                connection, info, cursors, named_cursors, rollback_only
            )
        try:
            for ref in cursors:
                cursor = ref()
                if cursor is not None and not self._close_cursor(cursor):
                    return False  # it could still run: better no connection
            if self.driver.in_transaction(connection) is False:
                return True  # the usual case: nothing to send, nothing to time
        except self._reset_errors as exc:
            return self._reset_failed(exc)
        return self._reset_fully(connection, info, (), named_cursors, rollback_only)

    def _close_cursor(self, cursor: Any) -> bool:
        """Close a cursor a borrower left open; whether it is closed now."""
        # Not contextlib.suppress: this runs per request, and it costs.
        try:  # noqa: SIM105
            cursor.close()
        except self._reset_errors:
            pass  # checked next
        return self.driver.cursor_is_closed(cursor)

    def _reset_fully(
        self,
        connection: Any,
        info: dict[str, Any],
        cursors: list[weakref.ref[Any]] | tuple[()],
        named_cursors: bool,
        rollback_only: bool,
    ) -> bool:
        """_reset() when it takes a round trip: timed by the watchdog."""
        mode, driver = self._reset_mode, self.driver
        if rollback_only and mode == "commit":
            mode = "rollback"
        call = None
        try:
            if named_cursors and mode != "commit":
                # Closing a server-side cursor is a round trip.
                call = self.bounded_call(connection, "a reset")
            for ref in cursors:
                cursor = ref()
                if cursor is not None and not self._close_cursor(cursor):
                    return False  # it could still run: better no connection
            in_transaction = driver.in_transaction(connection)
            if in_transaction is False and mode != "discard" and not named_cursors:
                return True
            if mode is None and in_transaction is not False:
                logger.warning(
                    "Alias %r: connection returned inside a transaction (or "
                    "with its state unknown after an error) with "
                    "reset_on_return=None; closing it instead of pooling it",
                    self.alias,
                    extra=log_fields(
                        "connection_discarded",
                        self.alias,
                        reason="returned_in_transaction",
                    ),
                )
                return False
            # A round trip: time it, but never cut a commit short (the client
            # could not tell whether it happened).
            if mode == "discard":  # also closes every cursor (DISCARD ALL)
                call = call or self.bounded_call(connection, "a reset")
                driver.discard(connection)
                info[INITIALISED] = False
            elif mode is not None:
                if call is None and mode != "commit":
                    call = self.bounded_call(connection, "a reset")
                driver.end_transaction(connection, commit=mode == "commit")
            if named_cursors and mode != "discard":
                # WITH HOLD cursors outlive the transaction: close what is left.
                call = call or self.bounded_call(connection, "a reset")
                driver.close_named_cursors(connection)
        except self._reset_errors as exc:
            return self._reset_failed(exc)
        finally:
            cut = call is not None and watchdog.finish(call)
        return not cut  # cut: it succeeded at its deadline, but the socket is shut

    def _reset_failed(self, error: BaseException) -> bool:
        logger.warning(
            "Alias %r: resetting a returned connection failed (%s: %s); closing it",
            self.alias,
            type(error).__name__,
            error,
            extra=log_fields(
                "connection_discarded",
                self.alias,
                reason="reset_failed",
                error=type(error).__name__,
            ),
        )
        return False

    def _returned_unreset(
        self, record: ConnectionPoolEntry, ended: str | None = None
    ) -> None:
        # Not reset by release(): its borrower was garbage-collected holding
        # it, or (``ended``: the thread's name) reclaim() takes it back from a
        # thread that ended with a transaction open, say. This runs inside the
        # collector, in any thread: no I/O and none of our locks here. Free
        # the slot now; the reaper closes the connection, and the server
        # rolls back what it left open. In a forked child the socket is the
        # parent's: keep it, untouched.
        connection = record.dbapi_connection
        if connection is None:  # invalidated: closed already
            return
        if sys.is_finalizing():
            # The interpreter is exiting: no reaper runs any more. Left on its
            # record, the connection says goodbye as it is freed.
            return
        entry: Any = record  # dbapi_connection is writable on SQLAlchemy's record
        entry.dbapi_connection = None
        if record.record_info is not None:
            record.record_info[INVALIDATED] = True
        if _fork.inherited(self.pid):
            _fork.keep_forever(connection)
        else:
            extra = log_fields("connection_abandoned", self.alias)
            if ended is None:
                reaper.close_later(connection, _COLLECTED, self.alias, extra=extra)
            else:
                reaper.close_later(
                    connection, _ENDED_CLOSED, self.alias, ended, extra=extra
                )

    def _on_invalidate(
        self, connection: Any, record: ConnectionPoolEntry, error: BaseException | None
    ) -> None:
        if record.record_info is not None:
            record.record_info[INVALIDATED] = True
        if error is None:  # a failed reset (logged) or a disposed pool's return
            return
        if isinstance(error, _Unusable):
            reason = "unusable_after_error"  # counted in returns_bad
        else:
            reason = "lost"  # failed pre-ping, or a disconnect at checkout
            self.stats.add("connections_lost")
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

    def _exhausted(self, waited: float) -> PoolTimeout:
        config = self.config
        message = (
            f"No connection available for database alias {self.alias!r} after "
            f"waiting {waited:.2f} s (timeout={config.timeout:g}): "
            f"pool_size={config.pool_size}, max_overflow={config.max_overflow}, "
            f"{self._pool.checkedout()} checked out{self._holders()}. Raise "
            "pool_size/max_overflow, lower threads per process, or give idle "
            "connections back (django_sapool.close_idle_connections)."
        )
        return self._timeout_error(message)

    def _holders(self) -> str:
        """Which threads hold this pool's connections, and for how long: the
        longest first (an executor thread keeping an idle one, say)."""
        now = time.monotonic()
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        held = []
        for ref in list(_fork.lent.values()):
            proxied = ref()
            if proxied is None or proxied._pool is not self._pool:
                continue
            ident, since = proxied.info.get(BORROWED, (None, now))
            name = names.get(ident, "an ended thread")
            held.append((now - since, name))
        if not held:
            return ""
        held.sort(reverse=True)
        shown = ", ".join(f"{name!r} for {age:.1f} s" for age, name in held[:5])
        more = f" and {len(held) - 5} more" if len(held) > 5 else ""
        return f", held by {shown}{more}"


def _from_the_creator(error: BaseException) -> BaseException:
    """``error`` with its traceback starting at the pool's creator.

    A failed connect passes up through some twenty frames of SQLAlchemy's
    checkout; someone debugging a wrong password wants the driver's error
    near the top, so those frames are left out (the checkout's stays).
    """
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code is not _CREATOR_CODE:
        tb = tb.tb_next
    return error if tb is None else error.with_traceback(tb)


_CREATOR_CODE = DatabasePool._open.__code__


def _wait_slice(timeout: float, unreachable_wait: float | None) -> float:
    """How long one wait for a free connection lasts (see _wait_for_connection).

    Slices divide ``timeout`` evenly, none longer than ``unreachable_wait``
    (nor shorter than 0.1 s), so a checkout gives up on time either way.
    """
    if unreachable_wait is None:
        return timeout
    slices = math.ceil(timeout / max(unreachable_wait, 0.1))
    return timeout / max(slices, 1)


class _QueuePool(QueuePool):
    """SQLAlchemy's QueuePool, told about returns that release() did not reset,
    and taking or putting back an idle connection in one step.

    Its queue's ``get()`` and ``put()`` go through a Condition's Python-level
    methods every time; when a connection is at hand (or a slot free) the
    same is done here under the queue's own lock, and anything else (waiting,
    overflow, a full queue) is left to QueuePool. A "checkin" event listener
    would cost every return more than ``returned_unreset`` does.
    """

    returned_unreset: Callable[[ConnectionPoolEntry], None]

    def _do_get(self) -> ConnectionPoolEntry:
        queue: sqla_queue.Queue[ConnectionPoolEntry] = self._pool  # type: ignore[assignment]
        with queue.mutex:
            idle = queue.queue
            if idle:  # nobody waits to put: returns never block
                return idle.pop() if queue.use_lifo else idle.popleft()
        return super()._do_get()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if not record.info.pop(RESET, False):
            self.returned_unreset(record)
        queue: sqla_queue.Queue[ConnectionPoolEntry] = self._pool  # type: ignore[assignment]
        with queue.mutex:
            idle = queue.queue
            if len(idle) < queue.maxsize:
                idle.append(record)
                waiting = queue.not_empty
                if waiting._waiters:  # type: ignore[attr-defined]
                    waiting.notify()
                return
        super()._do_return_conn(record)  # full: an overflow one is closed


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
