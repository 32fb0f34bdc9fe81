"""One SQLAlchemy QueuePool serving one alias and one set of connect parameters.

The pool never builds a connection itself: its creator calls Django's own
``get_new_connection()`` on the wrapper that is checking out, in that wrapper's
thread, with that checkout's parameters. Nothing is copied from Django and no
wrapper is captured.
"""

from __future__ import annotations

import logging
import os
import threading
from threading import get_ident
from time import monotonic
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import sqlalchemy.exc
from sqlalchemy import create_pool_from_url, event

from . import _fork, _listeners
from ._abandoned import ENDED_REUSED, close_abandoned
from ._events import log_fields
from ._exhausted import exhausted_message
from ._failover import Failover, Unusable
from ._gate import ConnectGate, Unreachable
from ._leaks import LeakWatch
from ._loan import Loan, LoanRef
from ._pings import Pings
from ._queue_pool import FastQueuePool, wait_slice
from ._reaper import reaper
from ._record_keys import (
    BORROWED,
    INITIALISED,
    INVALIDATED,
    LENT_AT,
    OPENED,
    RETURNED,
)
from ._reset import Cursors, Reset
from .config import PoolConfig
from .errors import PoolTimeout, ServerUnavailable
from .stats import FOLD_AT, stats_for

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry

    from ._drivers import Driver

logger = logging.getLogger("django_sapool")


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
        # A waiting checkout looks up at the end of each slice (see _gate).
        self._wait_slice = wait_slice(config.timeout, config.unreachable_wait)
        # A QueuePool with the driver's real dialect: its ping and its
        # disconnect detection (a bare QueuePool cannot pre-ping).
        pool = create_pool_from_url(
            dialect_url,
            poolclass=FastQueuePool,
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
        assert isinstance(pool, FastQueuePool)
        pool.returned_unreset = self._abandoned
        self._pool = pool
        # The idle connections: a checkout that finds none is "queued".
        self._idle: Any = getattr(pool._pool, "queue", (None,))
        self._timeout_error = timeout_error
        self._unavailable_error = unavailable_error
        self.stats = stats_for(alias)
        self.stats.config = config
        pings = self._pings = Pings(alias, config, pool)
        #: Start timing one of the pool's own round trips (see watchdog).
        self.bounded_call = pings.bounded_call
        self._reset = Reset(
            alias,
            config.reset_on_return,
            driver,
            (driver_error, OSError),
            self.bounded_call,
        )
        failover = Failover(alias, pool, driver, driver_error, self.stats)
        self.statement_failed = failover.statement_failed
        self.is_stale = failover.is_stale
        event.listen(pool, "invalidate", failover.on_invalidate)
        #: pre_ping as seconds: ping a connection idle at least this long.
        self._ping_idle: float | None = (
            None if isinstance(config.pre_ping, bool) else float(config.pre_ping)
        )
        self._gate = ConnectGate(alias, config.unreachable_wait, probe_limit)
        self._leaks = (
            LeakWatch(alias, config.leak_timeout) if config.leak_timeout else None
        )
        self._prewarm_pending = config.prewarm > 1
        #: Given to every loan: the bound method made once, not per checkout.
        self._on_collected = self._collected
        #: pre_ping=True: a ping at every checkout (see Pings.at_checkout).
        self._ping_each = config.pre_ping is True
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

    def checkout(self, borrower: Borrower, conn_params: dict[str, Any]) -> Loan:
        """Lend a connection; a new one is opened by ``borrower`` if needed."""
        stats = self.stats
        failure: str | None = "requests_errors"
        waiting = stats.waiting
        waiting.append(None)
        if not self._idle:  # no idle connection when it began: it queues
            stats.add("requests_queued")
        started = monotonic()
        self._connecting.borrower = (borrower, conn_params, started)
        try:
            try:
                loan = self._lend()
            except sqlalchemy.exc.TimeoutError:
                loan = self._wait_for_connection(started)
            limit = self._ping_idle
            if limit is not None:  # inline: the default runs it per checkout
                returned = loan.info.get(RETURNED)
                if returned is not None and started - returned >= limit:
                    loan = self._ping_if_idle(loan, started)
            failure = None
            if self._prewarm_pending:
                self._prewarm()
        except sqlalchemy.exc.TimeoutError:
            failure = "requests_timeouts"
            message = exhausted_message(
                self.alias, self.config, self._pool, monotonic() - started
            )
            error = self._timeout_error(message)
            logger.warning("%s", error, extra=log_fields("pool_exhausted", self.alias))
            raise error from None
        except BaseException as exc:
            raise _from_the_creator(exc)  # noqa: B904 - the same exception
        finally:
            self._connecting.borrower = None
            ended = monotonic()
            waiting.pop()
            waits = stats.waits
            waits.append(took := ended - started)
            if failure is not None or len(waits) >= FOLD_AT:
                stats.checkout_ended(failure)
            listeners = _listeners.registered
            if listeners:
                for listener in listeners:
                    listener.checkout_ended(self, took, failure)
        info = loan.info
        info[BORROWED] = (get_ident(), ended)
        if listeners:
            info[LENT_AT] = (listeners, ended)
        if self._leaks is not None:
            self._leaks.lent(loan)
        return loan

    def _lend(self) -> Loan:
        """A slot from the queue, with its connection opened, recycled or pinged.

        SQLAlchemy's own checkout wraps each in a proxy with a finaliser; we
        keep what it does to the slot (QueuePool's queue and overflow, the
        record's recycle and reconnect) and lend a lighter Loan instead
        (docs/performance.md, stop 19).
        """
        pool = self._pool
        # get_connection() and _checkin_failed() are on SQLAlchemy's record,
        # not in its interface.
        record: Any = pool._do_get()
        try:
            connection = record.get_connection()
            if self._ping_each:
                connection = self._pings.at_checkout(record, connection)
        except BaseException as error:
            # Invalidated if it holds a connection, and the slot given back.
            record._checkin_failed(error, _fairy_was_created=False)
            raise
        return Loan(pool, record, connection, self._on_collected)

    def _collected(self, ref: LoanRef) -> None:
        """A loan collected before it was given back: its borrower is gone.

        In the collector, in any thread: the slot goes back unreset, which
        frees it and leaves the connection to the reaper (see _abandoned).
        """
        record = getattr(ref, "record", None)  # unset if its loan never was
        if record is not None:
            ref.record = None
            self._pool._do_return_conn(record)

    def _discard(
        self, record: ConnectionPoolEntry, error: BaseException | None = None
    ) -> None:
        """Close a slot's connection for good and give the slot back."""
        try:
            record.invalidate(error)
        finally:
            self._pool._do_return_conn(record)

    def _wait_for_connection(self, started: float) -> Loan:
        """After a first wait for a free connection timed out, wait the rest.

        QueuePool waits in slices: a checkout that finds no idle connection
        while connects fail, since it began, gives up at the end of its slice
        (ServerUnavailable) instead of after the whole timeout.
        """
        deadline = started + self.config.timeout
        while True:
            if self._gate.failed_since(started):
                message = self._gate.no_idle_message(monotonic() - started)
                raise self._unavailable_error(message)
            if deadline - monotonic() < self._wait_slice / 2:
                raise sqlalchemy.exc.TimeoutError()  # checkout(): PoolTimeout
            try:
                return self._lend()
            except sqlalchemy.exc.TimeoutError:
                continue

    def release(
        self,
        loan: Loan,
        discard: bool,
        cursors: Cursors = (),
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
        # The loan ends where its slot goes back: an exception before that
        # (a listener's, a signal's) discards the connection, never the slot.
        info = loan.info
        try:
            if _listeners.registered:
                self._report_return(info)
            if self._leaks is not None:
                self._leaks.returned(loan)
            reusable = (
                not discard
                and not self.disposed
                and self._reset.ready(
                    loan.dbapi_connection, info, cursors, named_cursors, rollback_only
                )
            )
        except BaseException:
            self._discard(loan.end())  # interrupted: its state is unknown
            raise
        record = loan.end()
        if reusable:
            if self._ping_idle is not None:
                info[RETURNED] = monotonic()
            self._pool.put_back(record)
        elif discard:
            self.stats.add("returns_bad")
            self._discard(record, Unusable("Django found it unusable after an error"))
        else:
            if not self.disposed:
                self.stats.add("returns_bad")
            self._discard(record)

    def _report_return(self, info: dict[str, Any]) -> None:
        """Tell the listeners how long the connection was lent."""
        lent = info.pop(LENT_AT, None)
        listeners = _listeners.registered
        if lent is None or lent[0] is not listeners:
            return  # lent before these listeners came: its loan is unknown
        used = monotonic() - lent[1]
        for listener in listeners:
            listener.returned(self, used)

    def reclaim(
        self,
        loan: Loan,
        cursors: Cursors,
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
        record, connection, driver = loan.record, loan.dbapi_connection, self.driver
        reusable = False
        try:
            if self._leaks is not None:
                self._leaks.returned(loan)
            reusable = (
                clean
                and not self.disposed
                and self._reset.mode != "discard"
                and connection is not None
                and not driver.is_broken(connection)
                and all(
                    (cursor := ref()) is None or driver.cursor_is_closed(cursor)
                    for ref in cursors
                )
                and driver.in_transaction(connection) is False
            )
        finally:  # whatever happened, the slot goes back
            loan.end()
            if reusable:
                reaper.log_later(logging.INFO, ENDED_REUSED, self.alias, thread)
            else:  # its slot is freed now; the reaper closes it
                close_abandoned(record, self.alias, self.pid, ended=thread)
            # Ready as it is, or holding no connection.
            self._pool.put_back(record)

    def _abandoned(self, record: ConnectionPoolEntry) -> None:
        """A return release() did not reset: its borrower was collected."""
        close_abandoned(record, self.alias, self.pid)

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
            started = monotonic()
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
        took = monotonic() - started
        stats, slot = self.stats, record.record_info
        assert slot is not None
        stats.add("connections_num")
        stats.add("connections_ms", took * 1000)
        for listener in _listeners.registered:
            listener.connected(self, took)
        if slot.get(OPENED) and not slot.pop(INVALIDATED, False):
            stats.add("connections_recycled")
        slot[OPENED] = True
        config = self.config
        if config.recycle > 0 and config.recycle_jitter:
            self._pool.jitter_age(record, config.recycle * config.recycle_jitter)
        record.info[INITIALISED] = False
        if not self.carried:
            self.carried = {
                name: getattr(borrower, name) for name in borrower.sapool_carried_attrs
            }
        logger.debug("New connection for alias %r (%s)", self.alias, self.description)
        return connection

    def _ping_if_idle(self, loan: Loan, started: float) -> Loan:
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
            returned = loan.info.get(RETURNED)
            if returned is None or started - returned < limit:
                return loan
            del loan.info[RETURNED]  # pinged once per idle spell
            error: BaseException = Unusable("the pre-ping was cut off")
            try:
                alive = self._pings.dialect.do_ping(loan.dbapi_connection)
            except self._reset.errors as exc:
                alive, error = False, exc
            except BaseException:  # interrupted (a signal): state unknown
                self._discard(loan.end())
                raise
            if alive:
                return loan
            logger.warning(
                "Alias %r: the pre-ping of a connection idle %.1f s failed; "
                "replacing every connection opened before it",
                self.alias,
                started - returned,
                extra=log_fields("connection_discarded", self.alias, reason="lost"),
            )
            # Discards it (logged, counted) and every older one.
            record = loan.end()
            self._pool.invalidate_older(record)
            self._discard(record, error)
            loan = self._wait_for_connection(started)

    def _prewarm(self) -> None:
        """At the first checkout, open connections up to ``prewarm``.

        Only into free capacity: each new connection goes straight into the
        pool as idle, and warming stops, never waits, once the pool holds
        pool_size connections (other requests may have taken them meanwhile).
        """
        self._prewarm_pending = False
        opened = 0
        try:
            while opened + 1 < self.config.prewarm and self._pool.open_idle():
                opened += 1
        except Exception as exc:  # a warm-up failure must not fail the request
            logger.warning(
                "Alias %r: pre-warming stopped after %d extra connections (%s: %s)",
                self.alias,
                opened,
                type(exc).__name__,
                exc,
            )


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
